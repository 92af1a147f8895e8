//! Checks on panic payloads, so that a test expecting a panic says which one it expects.
//! Included with `#[path]`.

#![allow(dead_code)]

use costack::{yield_now, Coroutine};
use std::any::{Any, TypeId};
use std::cell::Cell;
use std::panic::catch_unwind;
use std::rc::Rc;
use std::sync::OnceLock;

/// The message of a panic payload (`&str` or `String`), or `None` for any other payload.
pub fn message(p: &(dyn Any + Send)) -> Option<&str> {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
}

/// The message of a panic payload as an owned string (`<not a message>` for any other
/// payload), for tests that keep it or hand it out of a coroutine.
pub fn message_string(p: &(dyn Any + Send)) -> String {
    message(p).unwrap_or("<not a message>").to_owned()
}

/// Asserts that `p` is a panic with a message containing `phrase`.
#[track_caller]
pub fn assert_message_contains(p: &(dyn Any + Send), phrase: &str) {
    match message(p) {
        Some(m) => assert!(m.contains(phrase), "panic message {m:?} lacks {phrase:?}"),
        None => panic!("expected a panic saying {phrase:?}, got a payload that is not a message"),
    }
}

/// The type of the private payload with which costack unwinds a suspended coroutine that is
/// dropped, taken from one such unwind (once per test binary).
pub fn forced_unwind_type() -> TypeId {
    static TYPE: OnceLock<TypeId> = OnceLock::new();
    *TYPE.get_or_init(measure_forced_unwind_type)
}

fn measure_forced_unwind_type() -> TypeId {
    let seen: Rc<Cell<Option<TypeId>>> = Rc::default();
    let s = seen.clone();
    let co = Coroutine::new(move || {
        let p = catch_unwind(yield_now).expect_err("a dropped coroutine is unwound");
        let p: &dyn Any = &*p;
        s.set(Some(p.type_id()));
    });
    let _ = co.enter();
    drop(co);
    let t = seen.get().expect("the forced unwind was caught");
    // Guards against measuring the type of the box or of the trait object instead.
    assert!(
        ![
            TypeId::of::<&str>(),
            TypeId::of::<String>(),
            TypeId::of::<Box<dyn Any + Send>>(),
            TypeId::of::<dyn Any + Send>(),
            TypeId::of::<dyn Any>(),
        ]
        .contains(&t),
        "not the payload's own type"
    );
    t
}

/// Whether `p` is costack's forced unwind of a dropped coroutine, not an ordinary panic.
pub fn is_forced_unwind(p: &(dyn Any + Send)) -> bool {
    let any: &dyn Any = p;
    any.type_id() == forced_unwind_type()
}

/// Asserts that `p` is costack's forced unwind of a dropped coroutine, not an ordinary panic.
#[track_caller]
pub fn assert_forced_unwind(p: &(dyn Any + Send)) {
    assert!(
        is_forced_unwind(p),
        "expected costack's forced unwind, got another payload (message: {:?})",
        message(p)
    );
}

//! The typed layer: generators.

use costack::{current, yield_now, Builder, CoId, Generator, GeneratorState};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[test]
fn iterator_over_yielded_values() {
    let mut gen = Generator::new(|y, ()| {
        for i in 0..100u64 {
            y.suspend(i);
        }
    });
    assert!(!gen.is_complete());
    // Bounded: one more than the body yields, so that a generator that never ends fails here.
    let got: Vec<u64> = gen.by_ref().take(101).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(gen.is_complete());
    // Exhausted for good: no resume of the finished body.
    assert_eq!(gen.next(), None);
    assert_eq!(gen.next(), None);
}

#[test]
fn values_in_and_out() {
    let mut echo = Generator::new(|y, first: String| {
        let mut got = vec![first];
        loop {
            let next = y.suspend(got.len());
            if next.is_empty() {
                return got;
            }
            got.push(next);
        }
    });
    assert_eq!(echo.resume("a".into()), GeneratorState::Yielded(1));
    assert_eq!(echo.resume("b".into()), GeneratorState::Yielded(2));
    assert_eq!(
        echo.resume(String::new()),
        GeneratorState::Complete(vec!["a".to_string(), "b".to_string()])
    );
    assert!(echo.is_complete());
}

#[test]
fn suspend_from_depth_and_nested_generators() {
    fn walk(y: &costack::Yielder<(), u32>, depth: u32) {
        if depth == 0 {
            return;
        }
        y.suspend(depth);
        walk(y, depth - 1);
    }
    let outer = Generator::new(|y, ()| {
        let inner = Generator::new(|yi, ()| walk(yi, 3));
        // Bounded, as below: a generator that never ends yields too many values and fails.
        for v in inner.take(4) {
            y.suspend(v * 10);
        }
        walk(y, 2);
    });
    assert_eq!(outer.take(6).collect::<Vec<_>>(), [30, 20, 10, 2, 1]);
}

#[test]
fn plain_yield_inside_a_generator_is_reported() {
    let mut g = Generator::<(), u8, ()>::new(|_y, ()| yield_now());
    let err = catch_unwind(AssertUnwindSafe(|| g.resume(()))).unwrap_err();
    assert!(err
        .downcast_ref::<&str>()
        .unwrap()
        .contains("Yielder::suspend"));
}

#[test]
fn entering_a_generator_behind_its_back_is_a_harmless_spurious_resume() {
    let slot = std::rc::Rc::new(std::cell::RefCell::new(None));
    let s = slot.clone();
    let mut g = Generator::<u8, u8, u8>::new(move |y, first| {
        *s.borrow_mut() = current();
        let second = y.suspend(first + 1);
        let third = y.suspend(second + 1);
        third * 2
    });
    assert_eq!(g.resume(10), GeneratorState::Yielded(11));
    let h = slot.borrow_mut().take().unwrap();
    // Entered through a handle, not `resume`: there is no input, so the body yields again.
    assert_eq!(h.enter(), costack::Status::Yielded);
    assert_eq!(h.enter(), costack::Status::Yielded);
    assert!(h.is_suspended() && !h.is_finished());
    assert_eq!(g.resume(20), GeneratorState::Yielded(21));
    assert_eq!(g.resume(30), GeneratorState::Complete(60));
}

#[test]
fn generator_panics_cross_to_the_resumer() {
    let mut g = Generator::<(), (), ()>::with_builder(Builder::new().name("gen"), |_, ()| {
        panic!("generator failed")
    });
    let err = catch_unwind(AssertUnwindSafe(|| g.resume(()))).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"generator failed"));
}

#[test]
fn dropping_an_unfinished_generator_unwinds_it() {
    let dropped = std::rc::Rc::new(std::cell::Cell::new(false));
    struct Flag(std::rc::Rc<std::cell::Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let d = dropped.clone();
    let mut g = Generator::new(move |y, ()| {
        let _f = Flag(d);
        loop {
            y.suspend(0u8);
        }
    });
    assert_eq!(g.resume(()), GeneratorState::Yielded(0));
    drop(g);
    assert!(dropped.get());
}

/// `Debug` shows the generator's coroutine: its id, name and state, as it goes.
#[test]
fn debug_shows_the_coroutine_and_its_state() {
    let mut g = Generator::<(), CoId, ()>::with_builder(Builder::new().name("gen"), |y, ()| {
        y.suspend(current().unwrap().id());
    });
    let shows = |id: &str, state: &str| {
        format!(
            r#"Generator {{ co: CoHandle {{ id: {id}, name: Some("gen"), state: "{state}" }} }}"#
        )
    };
    let before = format!("{g:?}");
    let id = match g.resume(()) {
        GeneratorState::Yielded(id) => id,
        GeneratorState::Complete(()) => panic!("the body suspends first"),
    };
    assert_eq!(before, shows(&id.to_string(), "ready"));
    assert_eq!(format!("{g:?}"), shows(&id.to_string(), "suspended"));
    assert_eq!(g.resume(()), GeneratorState::Complete(()));
    assert_eq!(format!("{g:?}"), shows(&id.to_string(), "finished"));
}

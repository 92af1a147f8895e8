//! The typed layer: generators.

use costack::{current, yield_now, Builder, Generator, GeneratorState};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[test]
fn iterator_over_yielded_values() {
    let gen = Generator::new(|y, ()| {
        for i in 0..100u64 {
            y.suspend(i);
        }
    });
    assert_eq!(gen.sum::<u64>(), 4950);
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
        for v in inner {
            y.suspend(v * 10);
        }
        walk(y, 2);
    });
    assert_eq!(outer.collect::<Vec<_>>(), [30, 20, 10, 2, 1]);
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
fn entering_a_generator_behind_its_back_is_caught() {
    let slot = std::rc::Rc::new(std::cell::RefCell::new(None));
    let s = slot.clone();
    let mut g = Generator::<(), u8, ()>::new(move |y, ()| {
        *s.borrow_mut() = current();
        y.suspend(1);
        y.suspend(2);
    });
    assert_eq!(g.resume(()), GeneratorState::Yielded(1));
    let h = slot.borrow_mut().take().unwrap();
    let err = catch_unwind(AssertUnwindSafe(|| h.enter())).unwrap_err();
    let msg = err.downcast_ref::<&str>().copied().unwrap_or("");
    assert!(
        msg.contains("other than through Generator::resume"),
        "{msg}"
    );
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

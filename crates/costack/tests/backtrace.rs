//! A backtrace taken inside a coroutine continues into the frames of the code that entered it
//! (the assembly backend's trampoline carries unwind information for that).
#![cfg(costack_asm)]

use costack::Coroutine;

#[inline(never)]
fn inside_the_coroutine() -> String {
    std::backtrace::Backtrace::force_capture().to_string()
}

#[inline(never)]
fn distinctive_enterer_function() -> String {
    let co = Coroutine::new(inside_the_coroutine);
    let bt = co.enter().finished().unwrap();
    std::hint::black_box(bt)
}

#[test]
fn backtrace_crosses_the_switch_into_the_enterer() {
    let bt = distinctive_enterer_function();
    let inside = bt.find("inside_the_coroutine").expect(&bt);
    let main_side = bt
        .find("distinctive_enterer_function")
        .unwrap_or_else(|| panic!("the backtrace stops at the coroutine's stack:\n{bt}"));
    assert!(inside < main_side, "{bt}");
    // It goes on past the enterer, up to the test harness.
    assert!(
        bt[main_side..].contains("backtrace_crosses_the_switch_into_the_enterer"),
        "{bt}"
    );
}

#[test]
fn backtrace_crosses_nested_switches() {
    #[inline(never)]
    fn level_two_enterer() -> String {
        let co = Coroutine::new(inside_the_coroutine);
        co.enter().finished().unwrap()
    }
    #[inline(never)]
    fn level_one_enterer() -> String {
        let co = Coroutine::new(level_two_enterer);
        co.enter().finished().unwrap()
    }
    let bt = level_one_enterer();
    let a = bt.find("inside_the_coroutine").expect(&bt);
    let b = bt.find("level_two_enterer").expect(&bt);
    let c = bt.find("level_one_enterer").expect(&bt);
    assert!(a < b && b < c, "{bt}");
}

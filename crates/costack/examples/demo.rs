//! A tour of costack: create, enter, yield from any depth, nesting, a generator.
//!
//! Run it with `cargo run --example demo`.

use costack::{current, yield_now, Coroutine, Generator, Status};

fn parse_line(line: &str) -> usize {
    // Deep inside ordinary code, hand control back to whoever entered us.
    println!("    [worker] parsing {line:?}, yielding mid-way");
    yield_now();
    line.split_whitespace().count()
}

fn main() {
    println!("backend: {}", costack::BACKEND);

    // 1. A coroutine that yields from inside a helper function.
    let worker = Coroutine::new(|| {
        let id = current().expect("inside a coroutine").id();
        println!("    [worker {id}] started");
        let words = parse_line("stackful coroutines read like plain code");
        println!("    [worker {id}] counted {words} words");
        words
    });
    println!("main: enter #1");
    assert_eq!(worker.enter(), Status::Yielded);
    println!("main: worker yielded; main does other work, then enters again");
    match worker.enter() {
        Status::Finished(n) => println!("main: worker finished with {n}"),
        Status::Yielded => unreachable!(),
    }

    // 2. Nesting: a coroutine enters another; the inner yield returns to the outer one.
    let outer = Coroutine::new(|| {
        let inner = Coroutine::new(|| {
            println!("        [inner] step 1");
            yield_now();
            println!("        [inner] step 2");
        });
        println!("    [outer] entering inner");
        let _ = inner.enter();
        println!("    [outer] inner yielded to me; yielding to main");
        yield_now();
        let _ = inner.enter();
        println!("    [outer] inner finished");
    });
    let _ = outer.enter();
    println!("main: outer yielded");
    let _ = outer.enter();

    // 3. A generator: values out on suspend, an Iterator when it takes and returns ().
    let squares = Generator::new(|y, ()| {
        for i in 1..=5u32 {
            y.suspend(i * i);
        }
    });
    let v: Vec<u32> = squares.collect();
    println!("generator: squares {v:?}");
}

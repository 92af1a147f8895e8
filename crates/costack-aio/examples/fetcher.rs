//! A concurrent fetcher with a deadline per request, in synchronous style.
//!
//! Each fetch is a plain function — connect (by host name), write the request, read the reply
//! — run as a task of a [`JoinSet`], inside its own [`timeout`]. Results are taken in the order
//! the fetches finish; a fetch that overruns its deadline is abandoned (its socket closes as its
//! stack unwinds) and reported as timed out. The host name is resolved on the loop's worker
//! pool, so a slow resolver does not stall the other fetches.
//!
//! To have something to fetch from, the example first starts a tiny line server on the same
//! loop: it answers `<name> <delay-ms>` with `<name>: done` after the delay.
//!
//! ```sh
//! cargo run -p costack-aio --example fetcher
//! ```

use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{sleep, timeout, EventLoop, JoinSet};
use std::io::{self, BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// Fetches `name` from `host:port`, whose server waits `delay_ms` before answering.
fn fetch(host: &str, port: u16, name: &str, delay_ms: u64) -> io::Result<String> {
    let mut stream = TcpStream::connect((host, port))?;
    writeln!(stream, "{name} {delay_ms}")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_owned())
}

/// The server side: one task per connection, answering one line after the requested delay.
fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept()?;
        costack_aio::spawn(move || -> io::Result<()> {
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line)?;
            let (name, delay) = line.trim_end().split_once(' ').unwrap_or(("?", "0"));
            sleep(Duration::from_millis(delay.parse().unwrap_or(0)));
            writeln!(&stream, "{name}: done")
        });
    }
}

fn main() {
    let lp = EventLoop::new();
    let outcomes = lp.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = costack_aio::spawn(move || serve(listener));

        let jobs = [("slow", 2_000), ("b", 60), ("a", 10), ("c", 120)];
        let started = Instant::now();
        let mut set = JoinSet::new();
        for (name, delay) in jobs {
            set.spawn(move || {
                let r = timeout(Duration::from_millis(500), || {
                    fetch("localhost", port, name, delay)
                });
                (name, r)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = set.join_next() {
            let (name, r) = done.expect("a fetch task panicked");
            let outcome = match r {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => format!("{name}: error: {e}"),
                Err(_elapsed) => format!("{name}: timed out"),
            };
            println!("{:>5} ms  {outcome}", started.elapsed().as_millis());
            outcomes.push(outcome);
        }
        server.cancel();
        outcomes
    });
    // In the order they finished: the quick ones by their delays, the slow one at its deadline.
    assert_eq!(
        outcomes,
        ["a: done", "b: done", "c: done", "slow: timed out"],
        "unexpected outcome"
    );
}

//! A key-value server: connection tasks talk to one store task through channels.
//!
//! The store is a `HashMap` owned by a single task — no lock, no `RefCell`. Each connection
//! task parses lines (`SET key value`, `GET key`, `DEL key`, `LEN`), sends each command to
//! the store with a [`oneshot`](costack_aio::channel::local::oneshot) for its reply, and waits
//! for that reply: plain function calls, each of which may yield. The accept loop uses
//! [`select!`](costack_aio::select!) to wait for either a new connection or the request to
//! stop, whichever comes first.
//!
//! With an address it serves until Ctrl-C (SIGINT, received as a select branch too); without
//! one it runs a self-check: a few clients in parallel, then a clean shutdown.
//!
//! ```sh
//! cargo run -p costack-aio --example kv -- 127.0.0.1:7001   # then: nc 127.0.0.1 7001
//! cargo run -p costack-aio --example kv                      # the self-check
//! ```

use costack_aio::channel::local::{mpsc, oneshot};
use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::signal::{Signals, SIGINT};
use costack_aio::{EventLoop, JoinSet};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};

/// A command for the store, with where its reply goes.
struct Request {
    command: Command,
    reply: oneshot::Sender<String>,
}

enum Command {
    Set(String, String),
    Get(String),
    Del(String),
    Len,
}

/// The store task: applies commands in the order they arrive until every sender is gone.
fn store(requests: mpsc::Receiver<Request>) {
    let mut map = HashMap::new();
    for Request { command, reply } in requests {
        let answer = match command {
            Command::Set(k, v) => match map.insert(k, v) {
                Some(old) => format!("OK (was {old})"),
                None => "OK".to_owned(),
            },
            Command::Get(k) => map.get(&k).cloned().unwrap_or_else(|| "(nil)".to_owned()),
            Command::Del(k) => (if map.remove(&k).is_some() { "1" } else { "0" }).to_owned(),
            Command::Len => map.len().to_string(),
        };
        // The connection may have gone away meanwhile: nothing to do then.
        let _ = reply.send(answer);
    }
}

fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("").to_ascii_uppercase();
    let args: Vec<&str> = words.collect();
    match (cmd.as_str(), args.as_slice()) {
        ("SET", [k, v @ ..]) if !v.is_empty() => Ok(Command::Set(k.to_string(), v.join(" "))),
        ("GET", [k]) => Ok(Command::Get(k.to_string())),
        ("DEL", [k]) => Ok(Command::Del(k.to_string())),
        ("LEN", []) => Ok(Command::Len),
        _ => Err(format!("ERR unknown command or wrong arguments: {line:?}")),
    }
}

/// One connection: a line in, a line out, until the client hangs up.
fn serve_connection(stream: TcpStream, store: mpsc::Sender<Request>) -> io::Result<()> {
    for line in BufReader::new(&stream).lines() {
        let answer = match parse(&line?) {
            Ok(command) => {
                let (reply, answer) = oneshot::channel();
                if store.send(Request { command, reply }).is_err() {
                    return Ok(()); // the store is gone: shutting down
                }
                answer.recv().unwrap_or_else(|| "ERR store gone".to_owned())
            }
            Err(e) => e,
        };
        writeln!(&stream, "{answer}")?;
    }
    Ok(())
}

/// Accepts connections until `stop` fires (or, with `signals`, until SIGINT).
fn serve(
    listener: TcpListener,
    stop: oneshot::Receiver<()>,
    mut signals: Option<Signals>,
) -> io::Result<()> {
    let (to_store, requests) = mpsc::bounded(64);
    let store_task = costack_aio::spawn(move || store(requests));
    let mut connections = JoinSet::new();
    loop {
        let stopping = match signals.as_mut() {
            Some(s) => costack_aio::select! {
                r = listener.readable_branch() => { r?; false }
                _ = stop.recv_branch() => true,
                _ = s.recv_branch() => true,
            },
            None => costack_aio::select! {
                r = listener.readable_branch() => { r?; false }
                _ = stop.recv_branch() => true,
            },
        };
        if stopping {
            break;
        }
        // Readable: a connection waits (another accept could have taken it, so try).
        let (stream, _) = listener.accept()?;
        let to_store = to_store.clone();
        connections.spawn(move || serve_connection(stream, to_store));
        while let Some(done) = connections.try_join_next() {
            if let Ok(Err(e)) = done {
                eprintln!("connection failed: {e}");
            }
        }
    }
    drop(connections); // cancels the connections still open: their stacks unwind
    drop(to_store);
    store_task.join(); // every sender is gone: the store ends
    Ok(())
}

/// Sends each command on its own line and returns the replies.
fn client(addr: std::net::SocketAddr, commands: &[&str]) -> io::Result<Vec<String>> {
    let stream = TcpStream::connect(addr)?;
    let mut lines = BufReader::new(&stream).lines();
    let mut replies = Vec::new();
    for c in commands {
        writeln!(&stream, "{c}")?;
        replies.push(lines.next().expect("the server hung up")?);
    }
    Ok(replies)
}

fn main() {
    let lp = EventLoop::new();
    if let Some(addr) = std::env::args().nth(1) {
        let signals = Signals::new(&[SIGINT]).expect("cannot listen for SIGINT");
        lp.block_on(move || {
            let listener = TcpListener::bind(addr.as_str()).expect("cannot bind");
            eprintln!(
                "serving on {}; Ctrl-C stops",
                listener.local_addr().unwrap()
            );
            let (_keep, stop) = oneshot::channel();
            serve(listener, stop, Some(signals)).unwrap();
        });
        return;
    }
    let replies = lp.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = oneshot::channel();
        let server = costack_aio::spawn(move || serve(listener, stop, None));
        // Ten clients at once, each with its own keys, then one that looks at them all.
        let mut clients = JoinSet::new();
        for i in 0..10 {
            clients.spawn(move || {
                let (k, v) = (format!("k{i}"), format!("v{i}"));
                client(
                    addr,
                    &[&format!("SET {k} {v}"), &format!("GET {k}"), "BOGUS"],
                )
                .unwrap()
            });
        }
        while let Some(r) = clients.join_next() {
            let r = r.unwrap();
            assert_eq!(r[0], "OK");
            assert!(r[1].starts_with('v'));
            assert!(r[2].starts_with("ERR unknown command"), "{}", r[2]);
        }
        let last = client(
            addr,
            &["LEN", "SET k3 new", "DEL k4", "DEL k4", "GET k4", "LEN"],
        );
        stop_tx.send(()).unwrap();
        server.join().unwrap();
        last.unwrap()
    });
    for r in &replies {
        println!("{r}");
    }
    assert_eq!(replies, ["10", "OK (was v3)", "1", "0", "(nil)", "9"]);
}

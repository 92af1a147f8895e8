//! A tokio server whose connection handler is plain synchronous code.
//!
//! `handle` below reads lines with `BufRead` and answers with `Write`, like code written for
//! blocking sockets. It runs as a coroutine hosted by a tokio task (`bridge::as_future`), and
//! the `SyncIo` adapter turns each read or write into `await_future` of tokio's own async call:
//! while a socket has nothing to read, the coroutine yields and the task returns `Pending`, so
//! one thread serves every connection.
//!
//! Run it with `cargo run -p costack --example tokio_sync_handler`.

use costack::bridge::{as_future, await_future};
use std::io::{BufRead, BufReader, Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `std::io::Read` and `Write` over a tokio stream, for code running in a hosted coroutine.
struct SyncIo(TcpStream);

impl Read for SyncIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        await_future(self.0.read(buf))
    }
}

impl Write for SyncIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        await_future(self.0.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        await_future(self.0.flush())
    }
}

/// The handler: ordinary blocking-style code. Upper-cases every line until "quit".
fn handle(stream: SyncIo) -> std::io::Result<u32> {
    let mut reader = BufReader::new(stream);
    let mut lines = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim() == "quit" {
            return Ok(lines);
        }
        lines += 1;
        let out = reader.get_mut();
        out.write_all(line.to_uppercase().as_bytes())?;
        out.flush()?;
    }
}

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        println!("listening on {addr}");

        // The server: one hosted coroutine per connection, on this one thread.
        tokio::task::spawn_local(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::task::spawn_local(async move {
                    let lines = as_future(move || handle(SyncIo(stream))).await.unwrap();
                    println!("  a connection closed after {lines} lines");
                });
            }
        });

        // Some async clients talking to it at the same time.
        let mut clients = Vec::new();
        for c in 0..5 {
            clients.push(tokio::task::spawn_local(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut answers = String::new();
                for i in 0..3 {
                    s.write_all(format!("client {c} line {i}\n").as_bytes())
                        .await
                        .unwrap();
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap();
                    answers.push_str(std::str::from_utf8(&buf[..n]).unwrap());
                }
                s.write_all(b"quit\n").await.unwrap();
                answers
            }));
        }
        for (c, client) in clients.into_iter().enumerate() {
            let answers = client.await.unwrap();
            assert_eq!(answers.lines().count(), 3);
            assert!(answers.starts_with(&format!("CLIENT {c} LINE 0")));
            print!("{answers}");
        }
        tokio::task::yield_now().await;
        Ok(())
    })
}

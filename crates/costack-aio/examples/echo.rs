//! An echo server written in plain synchronous style.
//!
//! `serve_connection` is the function one would write for a thread per connection: read,
//! write back, until the peer hangs up. On an event loop each connection is a task with a
//! small stack, and every read or write that would block yields it to the loop.
//!
//! ```sh
//! cargo run -p costack-aio --example echo -- 127.0.0.1:7000
//! ```
//!
//! The crate's echo test and the echo benchmark use these same functions.

use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{EventLoop, TaskBuilder};
use std::io::{self, Read, Write};
use std::time::Duration;

/// The stack of a connection task: the frames of `read`/`write` (about 2 KiB deep) and room.
pub const CONNECTION_STACK: usize = 64 * 1024;

/// Echoes one connection until the peer closes it; returns the bytes echoed.
///
/// The buffer is on the heap, as a `BufReader`'s would be: a 16 KiB array on the coroutine's
/// stack would work too, but would put the frames that run at every wait four pages below the
/// coroutine's control block, and with a thousand connections every page counts.
pub fn serve_connection(mut stream: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(total),
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Accepts connections until the listener fails, one task per connection.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nodelay(true)?;
                TaskBuilder::new()
                    .stack_size(CONNECTION_STACK)
                    .spawn(move || serve_connection(stream));
            }
            // Out of fds, or a connection that died in the backlog: keep serving the others.
            Err(e) if is_transient(&e) => costack_aio::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let lp = EventLoop::new();
    lp.block_on(move || {
        let listener = TcpListener::bind(&addr)?;
        println!("echo server listening on {}", listener.local_addr()?);
        serve(listener)
    })
}

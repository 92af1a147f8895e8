//! The synchronous-style echo server of `examples/echo.rs`, with 200 client tasks in the same
//! process exchanging 1 000 messages each; every byte is checked.

#[path = "../examples/echo.rs"]
#[allow(dead_code)]
mod echo;

use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{EventLoop, TaskBuilder};
use std::io::{Read, Write};

const CLIENTS: usize = 200;
const MESSAGES: usize = 1000;

/// The `i`th message of client `c`: 1 to 256 bytes, contents that depend on both.
fn message(c: usize, i: usize, buf: &mut Vec<u8>) {
    let len = 1 + (c * 31 + i * 17) % 256;
    buf.clear();
    buf.extend((0..len).map(|k| (c ^ (i * 7) ^ (k * 13)) as u8));
}

fn client(addr: std::net::SocketAddr, c: usize) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let (mut out, mut back) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for i in 0..MESSAGES {
        message(c, i, &mut out);
        s.write_all(&out).unwrap();
        back.resize(out.len(), 0);
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, out, "client {c}, message {i}");
        bytes += out.len();
    }
    bytes
}

#[test]
fn echo_server_200_clients_1000_messages_each() {
    let lp = EventLoop::builder()
        .stack_size(echo::CONNECTION_STACK)
        .build()
        .unwrap();
    let (bytes, expected) = lp.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = costack_aio::spawn(move || echo::serve(listener));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                TaskBuilder::new()
                    .stack_size(echo::CONNECTION_STACK)
                    .spawn(move || client(addr, c))
            })
            .collect();
        let bytes: usize = clients.into_iter().map(|h| h.join()).sum();
        server.cancel();
        let mut expected = 0;
        let mut m = Vec::new();
        for c in 0..CLIENTS {
            for i in 0..MESSAGES {
                message(c, i, &mut m);
                expected += m.len();
            }
        }
        (bytes, expected)
    });
    assert_eq!(bytes, expected);
}

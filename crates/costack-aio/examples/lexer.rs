//! A lexer over a socket: a generator that pulls bytes from a TCP stream and yields tokens,
//! consumed by an ordinary recursive-descent evaluator.
//!
//! The lexer is written as if the whole input were in memory — a loop over bytes with a
//! one-byte lookahead — yet its bytes arrive over the network in small pieces. Each read that
//! finds nothing yet waits *inside the generator*, which runs in a task: the wait suspends the
//! task with it (costack's resume contract), and the loop serves other tasks meanwhile. Neither
//! the lexer nor the evaluator knows that anything waits.
//!
//! ```sh
//! cargo run -p costack-aio --example lexer
//! ```

use costack::{Generator, Yielder};
use costack_aio::net::{TcpListener, TcpStream};
use costack_aio::{sleep, EventLoop};
use std::io::{BufReader, Read, Write};
use std::iter::Peekable;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(i64),
    Op(u8),
    Open,
    Close,
    /// End of one expression (a newline).
    End,
}

/// The lexer: yields the tokens of everything `stream` sends, until it closes.
fn lex(stream: TcpStream, out: &Yielder<(), Token>) {
    let mut bytes = BufReader::new(stream)
        .bytes()
        .map(|b| b.expect("read failed"));
    let mut next = bytes.next();
    while let Some(b) = next {
        next = bytes.next();
        match b {
            b'0'..=b'9' => {
                let mut n = i64::from(b - b'0');
                while let Some(d @ b'0'..=b'9') = next {
                    n = n * 10 + i64::from(d - b'0');
                    next = bytes.next();
                }
                out.suspend(Token::Num(n));
            }
            b'+' | b'-' | b'*' | b'/' => out.suspend(Token::Op(b)),
            b'(' => out.suspend(Token::Open),
            b')' => out.suspend(Token::Close),
            b'\n' => out.suspend(Token::End),
            b' ' => {}
            other => panic!("unexpected byte {:?}", other as char),
        }
    }
}

/// expr := term (('+' | '-') term)*
fn expr(t: &mut Peekable<impl Iterator<Item = Token>>) -> i64 {
    let mut v = term(t);
    while let Some(Token::Op(op @ (b'+' | b'-'))) = t.peek().cloned() {
        t.next();
        let r = term(t);
        v = if op == b'+' { v + r } else { v - r };
    }
    v
}

/// term := atom (('*' | '/') atom)*
fn term(t: &mut Peekable<impl Iterator<Item = Token>>) -> i64 {
    let mut v = atom(t);
    while let Some(Token::Op(op @ (b'*' | b'/'))) = t.peek().cloned() {
        t.next();
        let r = atom(t);
        v = if op == b'*' { v * r } else { v / r };
    }
    v
}

/// atom := number | '(' expr ')'
fn atom(t: &mut Peekable<impl Iterator<Item = Token>>) -> i64 {
    match t.next() {
        Some(Token::Num(n)) => n,
        Some(Token::Open) => {
            let v = expr(t);
            assert_eq!(t.next(), Some(Token::Close), "missing ')'");
            v
        }
        other => panic!("unexpected token {other:?}"),
    }
}

fn main() {
    let input = "12 + 34 * (5 - 6)\n(1 + 2) * (3 + 4) - 100 / 7\n2 * 3 * 4 * 5\n";
    let lp = EventLoop::new();
    let results = lp.block_on(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The sender: the input in 3-byte pieces, a millisecond apart.
        let sender = costack_aio::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for piece in input.as_bytes().chunks(3) {
                s.write_all(piece).unwrap();
                sleep(Duration::from_millis(1));
            }
        });
        let stream = TcpStream::connect(addr).unwrap();
        let mut tokens = Generator::new(move |y, ()| lex(stream, y)).peekable();
        let mut results = Vec::new();
        while tokens.peek().is_some() {
            results.push(expr(&mut tokens));
            assert_eq!(tokens.next(), Some(Token::End));
        }
        sender.join();
        results
    });
    for r in &results {
        println!("{r}");
    }
    assert_eq!(results, [12 - 34, 21 - 14, 120]);
}

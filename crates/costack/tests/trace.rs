//! Trace events (feature `trace`): enter, yield and terminate, with stable printable ids.
#![cfg(feature = "trace")]

use costack::{yield_now, Coroutine};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn enter_yield_terminate_are_traced() {
    let cap = Capture::default();
    let c2 = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || c2.clone())
        .finish();
    let (id, inner_id) = tracing::subscriber::with_default(subscriber, || {
        let co = Coroutine::new(|| {
            let inner = Coroutine::new(yield_now);
            let _ = inner.enter();
            yield_now();
            inner.id()
        });
        let _ = co.enter();
        let inner_id = co.enter().finished().unwrap();
        (co.id(), inner_id)
    });
    let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has(&format!("enter from=main to={id}")), "{text}");
    assert!(has(&format!("enter from={id} to={inner_id}")), "{text}");
    assert!(has(&format!("yield from={inner_id} to={id}")), "{text}");
    assert!(has(&format!("yield from={id} to=main")), "{text}");
    assert!(has(&format!("terminate co={id}")), "{text}");
    assert!(lines.iter().all(|l| l.contains("costack")), "{text}");
}

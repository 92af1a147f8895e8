//! An NBD server whose disk fails on command: to see what a client (qemu, the kernel's
//! nbd-client, an application on top) does when its disk says `EIO` or `ENOSPC`.
//!
//! ```sh
//! cargo run -p costack-nbd --example flaky-disk -- 10809 64   # port, size in MiB
//! ```
//!
//! It serves an in-memory disk named `flaky` and reads commands on its standard input, one a
//! line:
//!
//! ```text
//! fail OPS ERROR [OFFSET LEN] [xCOUNT] [after]   add a rule (see costack_nbd::FaultRule)
//!     OPS:   read,write,flush,trim,zero,cache,block-status or all
//!     ERROR: EIO, ENOSPC, EDQUOT, EFBIG, EROFS, EPERM, ENOMEM, EOVERFLOW, EOPNOTSUPP or a number
//!     after: carry the operation out, then report the error
//! clear                                          remove every rule
//! status                                         rules in force, operations failed so far
//! quit                                           stop (also at the end of the input)
//! ```
//!
//! For example `fail write ENOSPC 0 1048576 x3` fails the next three writes touching the first
//! MiB with "No space left on device", which `qemu-io -c 'write 0 4k' nbd://127.0.0.1:10809`
//! then reports.

use costack_nbd::{serve, Config, Export, FaultOp, FaultRule, Faults};
use std::io::BufRead;
use std::sync::Arc;

fn errno(name: &str) -> Result<i32, String> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "EIO" => libc::EIO,
        "ENOSPC" => libc::ENOSPC,
        "EDQUOT" => libc::EDQUOT,
        "EFBIG" => libc::EFBIG,
        "EROFS" => libc::EROFS,
        "EPERM" => libc::EPERM,
        "ENOMEM" => libc::ENOMEM,
        "EOVERFLOW" => libc::EOVERFLOW,
        "EOPNOTSUPP" | "ENOTSUP" => libc::EOPNOTSUPP,
        n => n.parse().map_err(|_| format!("unknown error {name:?}"))?,
    })
}

fn ops(list: &str) -> Result<Vec<FaultOp>, String> {
    if list == "all" {
        return Ok(FaultOp::ALL.to_vec());
    }
    list.split(',')
        .map(|o| {
            Ok(match o {
                "read" => FaultOp::Read,
                "write" => FaultOp::Write,
                "flush" => FaultOp::Flush,
                "trim" => FaultOp::Trim,
                "zero" => FaultOp::Zero,
                "cache" => FaultOp::Cache,
                "block-status" => FaultOp::BlockStatus,
                _ => return Err(format!("unknown operation {o:?}")),
            })
        })
        .collect()
}

/// Parses the words after `fail`.
fn rule(words: &[&str]) -> Result<FaultRule, String> {
    let [op_list, err, rest @ ..] = words else {
        return Err("usage: fail OPS ERROR [OFFSET LEN] [xCOUNT] [after]".into());
    };
    let mut r = FaultRule::new(errno(err)?).ops(&ops(op_list)?);
    let mut rest = rest;
    if let [off, len, more @ ..] = rest {
        if let (Ok(off), Ok(len)) = (off.parse::<u64>(), len.parse::<u64>()) {
            r = r.range(off, len);
            rest = more;
        }
    }
    for w in rest {
        if let Some(n) = w.strip_prefix('x') {
            let n: u64 = n.parse().map_err(|_| format!("bad count {w:?}"))?;
            r = r.times(n);
        } else if *w == "after" {
            r = r.after_io();
        } else {
            return Err(format!("unexpected {w:?}"));
        }
    }
    Ok(r)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fail = |msg: String| -> ! {
        eprintln!("flaky-disk: {msg}\nusage: flaky-disk [PORT [SIZE_MIB]]");
        std::process::exit(2)
    };
    let port: u16 = args.first().map_or(10809, |p| {
        p.parse()
            .unwrap_or_else(|_| fail(format!("not a port: {p:?}")))
    });
    let mib: u64 = args.get(1).map_or(64, |s| {
        s.parse()
            .ok()
            .filter(|&m: &u64| m > 0 && m <= 1 << 18)
            .unwrap_or_else(|| fail(format!("not a size in MiB (1 to 262144): {s:?}")))
    });
    let faults = Faults::new();
    let export = match Export::memory("flaky", mib << 20, false) {
        Ok(e) => e.with_faults(&faults),
        Err(e) => fail(format!("cannot make the disk: {e}")),
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| fail(format!("cannot listen on port {port}: {e}")));
    let server = serve(Arc::new(export), listener, Config::default())
        .unwrap_or_else(|e| fail(format!("cannot start: {e}")));
    eprintln!(
        "flaky-disk: {mib} MiB as \"flaky\" on nbd://{}/flaky; commands: fail, clear, status, quit",
        server.local_addr()
    );
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["fail", rest @ ..] => match rule(rest) {
                Ok(r) => {
                    eprintln!("added {r:?}");
                    faults.add(r);
                }
                Err(e) => eprintln!("{e}"),
            },
            ["clear"] => faults.clear(),
            ["status"] => eprintln!(
                "{} rule(s) in force, {} operation(s) failed so far",
                faults.active(),
                faults.injected()
            ),
            ["quit"] => break,
            _ => eprintln!(
                "commands: fail OPS ERROR [OFFSET LEN] [xCOUNT] [after], clear, status, quit"
            ),
        }
    }
    if let Err(e) = server.shutdown() {
        fail(format!("stopping: {e}"));
    }
}

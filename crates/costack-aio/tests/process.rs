//! Child processes: exit statuses, pipes, many children waited for at once without blocking
//! the loop, kill, timeouts, plain threads, dropped children reaped. Each wait test runs both
//! ways: with a pidfd (where the kernel has them) and on the worker pool (the fallback).

#[path = "common/threads.rs"]
mod threads;

use costack_aio::process::{Child, Command};
use costack_aio::{spawn, timeout, yield_now, EventLoop};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};
use threads::bounded;

const LIMIT: Duration = Duration::from_secs(20);

/// Both ways of waiting: pidfd, then the worker pool.
const WAYS: [bool; 2] = [true, false];

fn sh(script: &str, pidfd: bool) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]).use_pidfd(pidfd);
    c
}

/// Whether this kernel gives pidfds (the pidfd half of the tests checks it gets one).
fn kernel_has_pidfd() -> bool {
    // SAFETY: pidfd_open(2) of our own pid: returns a new fd (closed right away) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned to us and is closed once.
        unsafe { libc::close(fd as i32) };
    }
    fd >= 0
}

fn check_way(child: &Child, pidfd: bool) {
    assert_eq!(child.uses_pidfd(), pidfd && kernel_has_pidfd());
}

#[test]
fn exit_codes_and_signals_are_reported() {
    bounded(60, || {
        EventLoop::new().block_on(|| {
            for pidfd in WAYS {
                for code in [0, 1, 7, 255] {
                    let mut child = sh(&format!("exit {code}"), pidfd).spawn().unwrap();
                    check_way(&child, pidfd);
                    let st = timeout(LIMIT, || child.wait().unwrap()).unwrap();
                    assert_eq!(st.code(), Some(code));
                    assert_eq!(st.success(), code == 0);
                    // Reaped once; later calls give the same status.
                    assert_eq!(child.try_wait().unwrap(), Some(st));
                    assert_eq!(child.wait().unwrap(), st);
                }
                let st = timeout(LIMIT, || sh("kill -TERM $$", pidfd).status().unwrap()).unwrap();
                assert_eq!((st.code(), st.signal()), (None, Some(libc::SIGTERM)));
            }
        });
    });
}

#[test]
fn stdin_to_stdout_round_trip_through_cat() {
    bounded(60, || {
        EventLoop::new().block_on(|| {
            // Much more than a pipe holds: the writer and the reader must take turns.
            let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
            for pidfd in WAYS {
                let mut child = Command::new("cat")
                    .use_pidfd(pidfd)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let d = data.clone();
                let writer = spawn(move || {
                    stdin.write_all(&d).unwrap();
                    // Dropped here: cat sees the end of its input.
                });
                let mut out = Vec::new();
                timeout(LIMIT, || {
                    child
                        .stdout
                        .as_mut()
                        .unwrap()
                        .read_to_end(&mut out)
                        .unwrap()
                })
                .unwrap();
                writer.join();
                assert!(
                    out == data,
                    "cat returned {} bytes, not the same",
                    out.len()
                );
                assert!(timeout(LIMIT, || child.wait().unwrap()).unwrap().success());
            }
        });
    });
}

#[test]
fn output_collects_both_pipes_in_a_task_and_on_a_plain_thread() {
    bounded(60, || {
        // Each pipe gets more than a pipe holds, interleaved: reading one to its end before the
        // other would deadlock.
        let script = "i=0; while [ $i -lt 40 ]; do head -c 8192 /dev/zero; \
                      head -c 8192 /dev/zero | tr '\\0' e >&2; i=$((i+1)); done; exit 3";
        let check = |out: std::process::Output| {
            assert_eq!(out.status.code(), Some(3));
            assert_eq!(out.stdout.len(), 40 * 8192);
            assert!(out.stdout.iter().all(|&b| b == 0));
            assert_eq!(out.stderr.len(), 40 * 8192);
            assert!(out.stderr.iter().all(|&b| b == b'e'));
        };
        for pidfd in WAYS {
            // Plain thread: no loop at all.
            check(sh(script, pidfd).output().unwrap());
            // In a task.
            let out = EventLoop::new()
                .block_on(move || timeout(LIMIT, || sh(script, pidfd).output().unwrap()).unwrap());
            check(out);
        }
        // output(): stdin is /dev/null unless set.
        let out = Command::new("cat").output().unwrap();
        assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0));
        // Only stdout piped: wait_with_output reads that one.
        let child = Command::new("sh")
            .args(["-c", "echo hi; echo lost >&2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!((&out.stdout[..], &out.stderr[..]), (&b"hi\n"[..], &b""[..]));
    });
}

#[test]
fn many_children_are_waited_for_at_once_while_other_tasks_run() {
    bounded(120, || {
        const N: usize = 24;
        for pidfd in WAYS {
            EventLoop::new().block_on(move || {
                // Each child exits with the code it reads from its stdin, so none exits before
                // this task lets it: if a wait blocked the loop's thread, nothing would run.
                let mut stdins = Vec::new();
                let mut waiters = Vec::new();
                for _ in 0..N {
                    let mut child = sh("read code; exit $code", pidfd)
                        .stdin(Stdio::piped())
                        .spawn()
                        .unwrap();
                    check_way(&child, pidfd);
                    stdins.push(child.stdin.take().unwrap());
                    waiters.push(spawn(move || {
                        let st = child.wait().unwrap();
                        (st.code(), Instant::now())
                    }));
                }
                let ticks = Rc::new(Cell::new(0u32));
                let t = ticks.clone();
                let ticker = spawn(move || loop {
                    t.set(t.get() + 1);
                    yield_now();
                });
                // Every waiter has started its wait; the loop keeps turning meanwhile.
                while ticks.get() < 200 {
                    yield_now();
                }
                assert!(waiters.iter().all(|w| !w.is_finished()));
                let released = Instant::now();
                for (i, mut stdin) in stdins.into_iter().enumerate() {
                    writeln!(stdin, "{}", i + 10).unwrap();
                }
                timeout(LIMIT, || {
                    for (i, w) in waiters.into_iter().enumerate() {
                        let (code, at) = w.join();
                        assert_eq!(code, Some(i as i32 + 10));
                        assert!(at >= released);
                    }
                })
                .unwrap();
                ticker.cancel();
            });
        }
    });
}

#[test]
fn kill_ends_a_running_child() {
    bounded(60, || {
        EventLoop::new().block_on(|| {
            for pidfd in WAYS {
                let mut child = Command::new("sleep")
                    .arg("1000")
                    .use_pidfd(pidfd)
                    .spawn()
                    .unwrap();
                assert!(child.id() > 0);
                assert_eq!(child.try_wait().unwrap(), None);
                child.kill().unwrap();
                let st = timeout(LIMIT, || child.wait().unwrap()).unwrap();
                assert_eq!(st.signal(), Some(libc::SIGKILL));
                // Killing an exited child is not an error.
                child.kill().unwrap();
            }
        });
    });
}

#[test]
fn a_wait_abandoned_by_a_timeout_leaves_the_child_running() {
    bounded(60, || {
        EventLoop::new().block_on(|| {
            for pidfd in WAYS {
                let mut child = Command::new("cat")
                    .use_pidfd(pidfd)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                let stdin = child.stdin.take().unwrap();
                let start = Instant::now();
                assert!(timeout(Duration::from_millis(50), || child.wait()).is_err());
                assert!(start.elapsed() >= Duration::from_millis(50));
                assert_eq!(child.try_wait().unwrap(), None);
                drop(stdin);
                let st = timeout(LIMIT, || child.wait().unwrap()).unwrap();
                assert!(st.success());
            }
        });
    });
}

#[test]
fn children_work_on_a_plain_thread() {
    bounded(60, || {
        for pidfd in WAYS {
            let mut child = Command::new("cat")
                .use_pidfd(pidfd)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"plain thread").unwrap();
            drop(stdin);
            let mut out = String::new();
            child
                .stdout
                .as_mut()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "plain thread");
            assert!(child.wait().unwrap().success());
            assert_eq!(sh("exit 4", pidfd).status().unwrap().code(), Some(4));
        }
    });
}

#[test]
fn a_dropped_child_is_reaped_at_the_next_spawn() {
    bounded(60, || {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let stdin = child.stdin.take().unwrap();
        drop(child); // still running: cat waits for its input
        drop(stdin); // now it exits...
                     // ...and becomes a zombie: wait for that without reaping it.
                     // SAFETY: an all-zero siginfo_t is valid; `info` outlives the call.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; WNOWAIT leaves the child to be reaped by the module.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(r, 0);
        // The next spawn sweeps the dropped children that have exited.
        assert!(Command::new("true").status().unwrap().success());
        // SAFETY: waitpid(2) with WNOHANG on a pid, no memory passed.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1, "the dropped child was not reaped");
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
    });
}

#[test]
fn a_std_command_can_be_wrapped() {
    let mut std = std::process::Command::new("sh");
    std.args(["-c", "echo \"$X\"; pwd"])
        .env("X", "from std")
        .current_dir("/");
    let out = Command::from(std).output().unwrap();
    assert_eq!(out.stdout, b"from std\n/\n");
    assert!(out.status.success());
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let e = Command::new("/nonexistent/costack-aio-test")
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let e = EventLoop::new()
        .block_on(|| Command::new("/nonexistent/costack-aio-test").output())
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[test]
fn repeated_abandoned_fallback_waits_hold_one_worker_not_one_each() {
    bounded(60, || {
        // Two workers. Each abandoned wait on the worker pool used to leave its own job in
        // `waitid`: two timeouts filled the pool, and every later job waited for the child.
        let lp = EventLoop::builder().blocking_threads(2).build().unwrap();
        lp.block_on(|| {
            let mut child = Command::new("cat")
                .use_pidfd(false)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            for _ in 0..5 {
                assert!(timeout(Duration::from_millis(20), || child.wait()).is_err());
            }
            assert_eq!(child.try_wait().unwrap(), None);
            // A worker is free for other jobs while the child runs.
            let got = timeout(LIMIT, || costack_aio::run_blocking(|| 42));
            assert_eq!(got.ok(), Some(42));
            // The wait that comes next takes up the job already in `waitid`.
            drop(stdin);
            let st = timeout(LIMIT, || child.wait().unwrap()).unwrap();
            assert!(st.success());
        });
    });
}

//! Runs one test of the current test binary again in a child process, for cases that crash on
//! purpose or exhaust a process-wide limit. Included with `#[path]`.
//!
//! Under an emulator (a cross build run through cargo's runner, `scripts/cross.sh`), the binary
//! cannot be started directly: `COSTACK_TEST_RUNNER` holds the same emulator command line, and
//! the child is started through it. A Windows test binary under wine needs no runner for its
//! child: it is a Windows process, and wine starts its children as Windows processes too
//! (`scripts/cross.sh windows` leaves the variable unset).

use std::process::{Command, ExitStatus};

/// The command that starts this test binary again: the runner's words, then the binary.
pub fn self_command() -> Command {
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::var("COSTACK_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

/// Re-runs this test binary with only `test` selected and `env=role` set; returns the exit
/// status and stdout + stderr.
pub fn run_child(env: &str, test: &str, role: &str) -> (ExitStatus, String) {
    let out = self_command()
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, role)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

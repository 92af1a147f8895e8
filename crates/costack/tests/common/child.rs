//! Runs one test of the current test binary again in a child process, for cases that crash on
//! purpose or exhaust a process-wide limit. Included with `#[path]`.

use std::process::{Command, ExitStatus};

/// Re-runs this test binary with only `test` selected and `env=role` set; returns the exit
/// status and stdout + stderr.
pub fn run_child(env: &str, test: &str, role: &str) -> (ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, role)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

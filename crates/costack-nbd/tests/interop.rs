//! Real clients that nobody on this team wrote, against the server running in this process:
//! `qemu-img`, `qemu-io`, `nbdinfo`, `nbdcopy`.
//!
//! A missing tool makes its test print `SKIPPED ...` and pass, or fail where
//! `COSTACK_REQUIRE_ALL_TESTS=1` is set; CI installs them (`qemu-utils` and `libnbd-bin`) and
//! sets it, so there they run.

#[macro_use]
mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const MIB: usize = 1 << 20;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn random_file(tag: &str, len: usize, seed: u8) -> TempFile {
    TempFile::with_data(tag, &pattern(len, seed))
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn qemu_img_info_convert_compare() {
    require!("qemu-img");
    let disk = random_file("qimg-disk", 16 * MIB, 1);
    let original = read(disk.path());
    let srv = TestServer::file(disk.path(), 2);
    let uri = srv.uri();

    let info = stdout(&run("qemu-img", &["info", "--output=json", &uri]));
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 16 * MIB)),
        "{info}"
    );

    // Export → file, byte for byte.
    let out = TempFile::new("qimg-out");
    let out_s = out.path().to_str().unwrap();
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &uri, out_s],
    );
    assert!(
        read(out.path()) == original,
        "convert from the export differs"
    );
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", out_s, &uri],
    );

    // Another file → export (zero detection on, so write-zeroes are used too), then compare.
    let mut src = pattern(16 * MIB, 2);
    src[3 * MIB..5 * MIB].fill(0);
    let src_f = TempFile::with_data("qimg-src", &src);
    let src_s = src_f.path().to_str().unwrap();
    run(
        "qemu-img",
        &[
            "convert", "-n", "-f", "raw", "-O", "raw", "-S", "4k", src_s, &uri,
        ],
    );
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", src_s, &uri],
    );
    drop(srv); // stop, flush
    assert!(
        read(disk.path()) == src,
        "the file holds what was converted in"
    );
}

#[test]
fn qemu_io_patterns_flush_discard_zeroes_unaligned() {
    require!("qemu-io");
    let srv = TestServer::memory(16 * MIB as u64);
    let uri = srv.uri();
    let cmds = [
        "write -P 0xab 0 64k",
        "read -P 0xab 0 64k",
        "aio_write -P 0xc1 1M 64k",
        "aio_write -P 0xc2 2M 128k",
        "aio_write -P 0xc3 3M 4k",
        "aio_flush",
        "read -P 0xc1 1M 64k",
        "read -P 0xc2 2M 128k",
        "read -P 0xc3 3M 4k",
        "writev -P 0x5e 5M 4k 8k 512",
        "readv -P 0x5e 5M 4k 8k 512",
        "write -P 0x33 8M 1M",
        "discard 8M 1M",
        "write -P 0x44 9M 1M",
        "write -z 9M 1M",
        "read -P 0 9M 1M",
        "write -z -u 10M 64k",
        "read -P 0 10M 64k",
        "write -P 0x11 7 1",
        "read -P 0x11 7 1",
        "read -P 0xab 6 1",
        "read -P 0xab 8 4093",
        "write -P 0x22 65535 3",
        "read -P 0x22 65535 3",
        "write -f -P 0x66 12M 4k",
        "read -P 0x66 12M 4k",
        "flush",
    ];
    let mut args = vec!["-f", "raw"];
    for c in &cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(&uri);
    let o = run("qemu-io", &args);
    let text = stdout(&o) + &String::from_utf8_lossy(&o.stderr);
    assert!(!text.contains("failed"), "{text}");
    assert!(!text.contains("error"), "{text}");
    assert!(text.contains("discard 1048576/1048576"), "{text}");
}

#[test]
fn nbdinfo_list_and_map() {
    require!("nbdinfo");
    let srv = TestServer::memory(8 * MIB as u64);
    {
        let (mut c, _) = Client::open(srv.addr, false);
        assert_eq!(c.write(MIB as u64, &vec![1u8; 2 * MIB]), 0);
        c.disconnect();
    }
    let uri = srv.uri();
    let info = stdout(&run("nbdinfo", &[&uri]));
    assert!(info.contains("export-size: 8388608"), "{info}");
    assert!(info.contains("base:allocation"), "{info}");
    assert!(info.contains("can_multi_conn: true"), "{info}");
    assert!(info.contains("block_size_maximum: 33554432"), "{info}");

    let list = stdout(&run("nbdinfo", &["--list", &format!("nbd://{}", srv.addr)]));
    assert!(list.contains("export=\"test\""), "{list}");

    let map = stdout(&run("nbdinfo", &["--map", &uri]));
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{map}");
    assert_eq!(&rows[0][..3], ["0", "1048576", "3"]);
    assert_eq!(&rows[1][..3], ["1048576", "2097152", "0"]);
    assert_eq!(&rows[2][..3], ["3145728", "5242880", "3"]);
    assert!(map.contains("hole,zero") && map.contains("data"), "{map}");
}

#[test]
fn nbdcopy_to_a_file_and_back() {
    require!("nbdcopy");
    let disk = random_file("nbdcopy-disk", 24 * MIB, 3);
    let original = read(disk.path());
    let srv = TestServer::file(disk.path(), 1);
    let uri = srv.uri();
    // Export → file (nbdcopy uses several connections and many requests in flight).
    let out = TempFile::new("nbdcopy-out");
    run("nbdcopy", &[&uri, out.path().to_str().unwrap()]);
    assert!(
        read(out.path()) == original,
        "nbdcopy export → file differs"
    );
    // Another file → export, then back out, byte for byte.
    let mut other = pattern(24 * MIB, 4);
    other[MIB..3 * MIB].fill(0);
    let src = TempFile::with_data("nbdcopy-src", &other);
    run("nbdcopy", &[src.path().to_str().unwrap(), &uri]);
    let back = TempFile::new("nbdcopy-back");
    run("nbdcopy", &[&uri, back.path().to_str().unwrap()]);
    assert!(read(back.path()) == other, "file → export → file differs");
    // Flush is run by nbdcopy at the end; the server's file holds it.
    srv.shutdown();
    assert!(read(disk.path()) == other);
}

#[test]
fn a_client_killed_mid_write_does_not_harm_others() {
    require!("qemu-io");
    let disk = TempFile::with_data("kill-disk", &vec![0u8; 64 * MIB]);
    let srv = TestServer::file(disk.path(), 2);
    let uri = srv.uri();
    // Another client's data, acknowledged and flushed.
    run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "flush", &uri],
    );
    // A long run of big writes to the rest of the export, killed while it writes.
    let mut args: Vec<String> = vec!["-f".into(), "raw".into()];
    for _ in 0..40 {
        args.push("-c".into());
        args.push("write -P 0x77 2M 62M".into());
    }
    args.push(uri.clone());
    let mut killed = 0;
    for delay_ms in [50, 200] {
        let child = Command::new("qemu-io")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reap = Reap(Some(child));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let mut c = reap.0.take().unwrap();
        if c.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = c.kill(); // SIGKILL: no goodbye, possibly half a request on the wire
        let _ = c.wait();
    }
    assert!(
        killed > 0,
        "the copy always finished before it could be killed"
    );
    // The server still serves, and the first client's data is intact.
    let o = run("qemu-io", &["-f", "raw", "-c", "read -P 0x5a 0 1M", &uri]);
    assert!(!stdout(&o).contains("failed"));
    let (mut c, _) = Client::open(srv.addr, true);
    assert_eq!(c.read(0, 4096).unwrap(), vec![0x5a; 4096]);
    c.disconnect();
    srv.shutdown();
    assert!(read(disk.path())[..MIB].iter().all(|&b| b == 0x5a));
}

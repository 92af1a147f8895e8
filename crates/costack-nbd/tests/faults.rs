//! Faults from below: a backend that fails answers each affected request with the right NBD
//! error, the connection and the other clients go on, and nothing acknowledged is lost.
//!
//! Two sources of faults: the injected ones of [`Faults`] (every command, every error, exactly
//! when the test says), and a real full file system (a small tmpfs under a sparse file larger
//! than it; needs root to mount, so it is skipped elsewhere, or fails with
//! `COSTACK_REQUIRE_ALL_TESTS=1`).

mod common;

use common::*;
use costack_nbd::proto::{cflag, cmd, err};
use costack_nbd::{Config, Export, FaultOp, FaultRule, Faults, WritePath};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn faulty_memory(size: u64) -> (TestServer, Faults) {
    let faults = Faults::new();
    let export = Export::memory("test", size, false)
        .unwrap()
        .with_faults(&faults);
    (TestServer::start(export, Config::default()), faults)
}

/// Each command, failed once with an OS error, gets exactly the NBD error the spec asks for;
/// the next request on the same connection succeeds.
fn each_command_gets_its_error(structured: bool) {
    let (srv, faults) = faulty_memory(4 * MIB as u64);
    let (mut c, _) = Client::open(srv.addr, structured);
    let data = pattern(64 * KIB, 3);
    assert_eq!(c.write(0, &data), 0);

    let cases: &[(FaultOp, i32, u32)] = &[
        (FaultOp::Read, libc::EIO, err::EIO),
        (FaultOp::Read, libc::ENOMEM, err::ENOMEM),
        (FaultOp::Read, libc::EOVERFLOW, err::EINVAL),
        (FaultOp::Read, libc::ESHUTDOWN, err::EIO),
        (FaultOp::Write, libc::ENOSPC, err::ENOSPC),
        (FaultOp::Write, libc::EDQUOT, err::ENOSPC),
        (FaultOp::Write, libc::EFBIG, err::ENOSPC),
        (FaultOp::Write, libc::EROFS, err::EPERM),
        (FaultOp::Write, libc::EIO, err::EIO),
        (FaultOp::Flush, libc::EIO, err::EIO),
        (FaultOp::Trim, libc::EIO, err::EIO),
        (FaultOp::Trim, libc::EOPNOTSUPP, err::EINVAL),
        (FaultOp::Zero, libc::ENOSPC, err::ENOSPC),
        (FaultOp::Zero, libc::EOPNOTSUPP, err::EINVAL),
        (FaultOp::Cache, libc::EIO, err::EIO),
        (FaultOp::BlockStatus, libc::EIO, err::EIO),
    ];
    for &(op, errno, want) in cases {
        if op == FaultOp::BlockStatus && !structured {
            continue; // no metadata context without structured replies
        }
        let before = faults.injected();
        faults.add(FaultRule::new(errno).ops(&[op]).once());
        let run = |c: &mut Client| -> u32 {
            match op {
                FaultOp::Read => c.read(0, 4096).err().unwrap_or(0),
                FaultOp::Write => c.write(4096, &data[..4096]),
                FaultOp::Flush => c.simple(cmd::FLUSH, 0, 0, 0),
                FaultOp::Trim => c.simple(cmd::TRIM, 0, 2 * MIB as u64, 64 * KIB as u32),
                FaultOp::Zero => c.simple(cmd::WRITE_ZEROES, 0, 2 * MIB as u64, 4096),
                FaultOp::Cache => c.simple(cmd::CACHE, 0, 0, 4096),
                FaultOp::BlockStatus => c.block_status(0, 0, 4096).err().unwrap_or(0),
            }
        };
        assert_eq!(run(&mut c), want, "{op:?} failed with errno {errno}");
        assert_eq!(faults.injected(), before + 1);
        assert_eq!(faults.active(), 0, "a once rule is spent");
        assert_eq!(run(&mut c), 0, "{op:?} again, with no fault");
    }
    // A FUA write whose flush fails: the error is the flush's.
    faults.add(FaultRule::new(libc::EIO).ops(&[FaultOp::Flush]).once());
    assert_eq!(c.write_fua(8192, &data[..4096]), err::EIO);
    // FAST_ZERO may say ENOTSUP (the one request that may).
    faults.add(
        FaultRule::new(libc::EOPNOTSUPP)
            .ops(&[FaultOp::Zero])
            .once(),
    );
    assert_eq!(
        c.simple(cmd::WRITE_ZEROES, cflag::FAST_ZERO, 0, 4096),
        err::ENOTSUP
    );
    // What was acknowledged is there.
    let mut want = data.clone();
    want[4096..8192].copy_from_slice(&data[..4096]);
    want[8192..12288].copy_from_slice(&data[..4096]);
    assert_eq!(c.read(0, 64 * KIB as u32).unwrap(), want);
    c.disconnect();
}

#[test]
fn injected_faults_get_the_right_error_with_structured_replies() {
    each_command_gets_its_error(true);
}

#[test]
fn injected_faults_get_the_right_error_with_simple_replies() {
    each_command_gets_its_error(false);
}

/// Faults on one client's range fail only its requests: another connection, pipelining on
/// its own range meanwhile, sees every request succeed.
#[test]
fn one_clients_faults_do_not_disturb_another() {
    let (srv, faults) = faulty_memory(8 * MIB as u64);
    let (mut bad, _) = Client::open(srv.addr, true);
    let (mut good, _) = Client::open(srv.addr, false);
    let id = faults.add(FaultRule::new(libc::EIO).range(0, MIB as u64));
    let block = 64 * KIB;
    for round in 0..4u64 {
        // The good client pipelines 16 writes then 16 reads on [4 MiB, 5 MiB).
        for i in 0..16u64 {
            let d = pattern(block, (round * 16 + i) as u8);
            good.send(
                cmd::WRITE,
                0,
                1000 + i,
                4 * MIB as u64 + i * block as u64,
                block as u32,
                &d,
            );
        }
        // Meanwhile the bad client's requests all fail, and it stays connected.
        assert_eq!(bad.write(round * 4096, &[1; 4096]), err::EIO);
        assert_eq!(bad.read(round * 4096, 4096), Err(err::EIO));
        assert_eq!(bad.simple(cmd::TRIM, 0, 0, 4096), err::EIO);
        let mut acked = 0;
        for _ in 0..16 {
            let r = good.read_reply().unwrap();
            assert_eq!(r.error(), 0);
            assert!((1000..1016).contains(&r.cookie()));
            acked += 1;
        }
        assert_eq!(acked, 16);
        for i in 0..16u64 {
            let got = good
                .read(4 * MIB as u64 + i * block as u64, block as u32)
                .unwrap();
            assert!(got == pattern(block, (round * 16 + i) as u8));
        }
        // Outside the faulty range the bad client is served too.
        assert_eq!(bad.write(2 * MIB as u64, &[round as u8; 4096]), 0);
    }
    assert_eq!(faults.injected(), 12);
    assert!(faults.remove(id));
    assert_eq!(bad.write(0, &[9; 4096]), 0);
    assert_eq!(bad.read(0, 4096).unwrap(), vec![9; 4096]);
    bad.disconnect();
    good.disconnect();
}

/// Pipelined writes while a rule fails some of them: every acknowledged write reads back
/// exactly after the rule is gone; a failed one left the old data or the new (the protocol
/// allows either), nothing else.
fn acknowledged_writes_survive(export: Export, faults: &Faults) {
    let srv = TestServer::start(export, Config::default());
    let (mut c, _) = Client::open(srv.addr, true);
    let block = 32 * KIB;
    let blocks = 64u64;
    let old = pattern(block * blocks as usize, 0xA5);
    assert_eq!(c.write(0, &old), 0);
    // Every third write in the second quarter fails, ENOSPC and EIO in turn.
    faults.add(
        FaultRule::new(libc::ENOSPC)
            .ops(&[FaultOp::Write])
            .range(16 * block as u64, 16 * block as u64)
            .times(3),
    );
    // These two happen, and are reported failed all the same.
    faults.add(
        FaultRule::new(libc::EIO)
            .ops(&[FaultOp::Write])
            .range(40 * block as u64, 2 * block as u64)
            .after_io(),
    );
    for i in 0..blocks {
        let d = pattern(block, i as u8);
        c.send(cmd::WRITE, 0, 100 + i, i * block as u64, block as u32, &d);
    }
    let mut failed = Vec::new();
    for _ in 0..blocks {
        let r = c.read_reply().unwrap();
        let i = r.cookie() - 100;
        match r.error() {
            0 => {}
            e => {
                let want = if (40..42).contains(&i) {
                    err::EIO
                } else {
                    err::ENOSPC
                };
                assert_eq!(e, want, "write {i}");
                failed.push(i);
            }
        }
    }
    failed.sort();
    assert_eq!(failed.len(), 5, "{failed:?}");
    assert!(
        failed[..3].iter().all(|i| (16..32).contains(i)),
        "{failed:?}"
    );
    assert_eq!(&failed[3..], [40, 41]);
    faults.clear();
    assert_eq!(c.simple(cmd::FLUSH, 0, 0, 0), 0);
    for i in 0..blocks {
        let got = c.read(i * block as u64, block as u32).unwrap();
        let new = pattern(block, i as u8);
        if (40..42).contains(&i) {
            assert!(got == new, "write {i} was carried out, then failed");
        } else if failed.contains(&i) {
            let was = &old[i as usize * block..(i as usize + 1) * block];
            assert!(
                got.iter()
                    .zip(was.iter().zip(&new))
                    .all(|(g, (o, n))| g == o || g == n),
                "failed write {i}: neither old nor new data"
            );
        } else {
            assert!(got == new, "acknowledged write {i} did not read back");
        }
    }
    c.disconnect();
}

#[test]
fn acknowledged_writes_read_back_after_faults_memory() {
    let faults = Faults::new();
    let e = Export::memory("test", 4 * MIB as u64, false)
        .unwrap()
        .with_faults(&faults);
    acknowledged_writes_survive(e, &faults);
}

#[test]
fn acknowledged_writes_read_back_after_faults_file() {
    for writes in [WritePath::Inline, WritePath::Aio] {
        let f = TempFile::with_data("faults-file", &vec![0u8; 4 * MIB]);
        let faults = Faults::new();
        let e = Export::file("test", f.path(), false, writes)
            .unwrap()
            .with_faults(&faults);
        acknowledged_writes_survive(e, &faults);
    }
}

/// A tmpfs mounted for one test, unmounted (lazily) and removed when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> io::Result<Tmpfs> {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("costack-nbd-tmpfs-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string for the whole call.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Tmpfs(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path string; MNT_DETACH unmounts even with files still open.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A 4 MiB tmpfs holding a sparse 16 MiB file, or `None` (skipped) without root.
fn full_fs_disk() -> Option<(Tmpfs, PathBuf)> {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(e) => {
            skip_or_fail(&format!("cannot mount a tmpfs ({e}); needs root"));
            return None;
        }
    };
    let p = fs.path("disk");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(16 * MIB as u64)
        .unwrap();
    Some((fs, p))
}

fn full_file_system(writes: WritePath) {
    let Some((_fs, disk)) = full_fs_disk() else {
        return;
    };
    let srv = TestServer::start(
        Export::file("test", &disk, false, writes).unwrap(),
        Config::default(),
    );
    let (mut c, _) = Client::open(srv.addr, true);
    // 192 KiB does not divide the free space: the last write that gets in is a short one,
    // whose rest meets ENOSPC.
    let block = 192 * KIB;
    let mut acked: Vec<(u64, u8)> = Vec::new();
    let mut failed = None;
    for i in 0..(16 * MIB / block) as u64 {
        let d = pattern(block, i as u8 + 1);
        match c.write(i * block as u64, &d) {
            0 => acked.push((i, i as u8 + 1)),
            e => {
                assert_eq!(e, err::ENOSPC, "write {i}");
                failed = Some(i);
                break;
            }
        }
    }
    let failed = failed.expect("a 4 MiB file system took 16 MiB");
    // The write that failed was a short one: the kernel took its first part (what space was
    // left), then said ENOSPC for the rest; the server went on with the rest and reported the
    // error instead of acknowledging a partial write.
    let got = c.read(failed * block as u64, block as u32).unwrap();
    let new = pattern(block, failed as u8 + 1);
    let written = got.iter().zip(&new).take_while(|(g, n)| g == n).count();
    assert!(
        written > 0 && written < block && got[written..].iter().all(|&b| b == 0),
        "the failed write {failed} left {written} bytes, then {:?}",
        &got[written..written + 16]
    );
    assert!(
        acked.len() >= 10,
        "only {} blocks fitted in 4 MiB",
        acked.len()
    );
    // The server keeps serving: more writes fail the same way, write-zeroes too (tmpfs cannot
    // zero a range, so zeroes are written), reads and flushes work.
    for i in failed + 1..failed + 4 {
        assert_eq!(c.write(i * block as u64, &vec![7; block]), err::ENOSPC);
    }
    assert_eq!(
        c.simple(
            cmd::WRITE_ZEROES,
            cflag::NO_HOLE,
            12 * MIB as u64,
            2 * MIB as u32
        ),
        err::ENOSPC
    );
    assert_eq!(c.simple(cmd::FLUSH, 0, 0, 0), 0);
    let check = |c: &mut Client, acked: &[(u64, u8)]| {
        for &(i, seed) in acked {
            let got = c.read(i * block as u64, block as u32).unwrap();
            assert!(got == pattern(block, seed), "acknowledged block {i}");
        }
    };
    check(&mut c, &acked);
    // A second client sees the same data and the same error.
    let (mut c2, _) = Client::open(srv.addr, false);
    check(&mut c2, &acked);
    assert_eq!(c2.write(15 * MIB as u64, &vec![1; block]), err::ENOSPC);
    // Trimming the first half gives the space back; new writes fit again.
    let half = acked.len() / 2;
    for &(i, _) in &acked[..half] {
        assert_eq!(
            c.simple(cmd::TRIM, 0, i * block as u64, block as u32),
            0,
            "trim {i}"
        );
        assert_eq!(
            c.read(i * block as u64, block as u32).unwrap(),
            vec![0; block]
        );
    }
    let mut kept: Vec<(u64, u8)> = acked[half..].to_vec();
    let mut fitted = 0;
    for (n, i) in (failed..failed + half as u64).enumerate() {
        let seed = 0x80 + n as u8;
        match c.write(i * block as u64, &pattern(block, seed)) {
            0 => {
                kept.push((i, seed));
                fitted += 1;
            }
            e => assert_eq!(e, err::ENOSPC),
        }
    }
    assert!(fitted >= half - 1, "{fitted} of {half} writes fitted again");
    assert_eq!(c.simple(cmd::FLUSH, 0, 0, 0), 0);
    check(&mut c, &kept);
    check(&mut c2, &kept);
    c.disconnect();
    c2.disconnect();
    srv.shutdown();
    // And on the file itself, after the server is gone.
    let bytes = std::fs::read(&disk).unwrap();
    for &(i, seed) in &kept {
        let at = i as usize * block;
        assert!(
            bytes[at..at + block] == pattern(block, seed),
            "block {i} in the file"
        );
    }
}

#[test]
fn full_file_system_gets_enospc_and_keeps_acknowledged_writes_inline() {
    full_file_system(WritePath::Inline);
}

#[test]
fn full_file_system_gets_enospc_and_keeps_acknowledged_writes_aio() {
    full_file_system(WritePath::Aio);
}

/// qemu-io, writing to the export on a full file system, reports ENOSPC as such.
#[test]
fn qemu_io_sees_no_space_left_on_device() {
    if !have("qemu-io") {
        skip_or_fail("`qemu-io` is not installed (Debian: qemu-utils)");
        return;
    }
    let Some((fs, disk)) = full_fs_disk() else {
        return;
    };
    // Fill the file system but for 64 KiB.
    let filler = fs.path("filler");
    std::fs::write(&filler, vec![1u8; 4 * MIB - 64 * KIB]).unwrap();
    let srv = TestServer::start(
        Export::file("test", &disk, false, WritePath::Inline).unwrap(),
        Config::default(),
    );
    let run = |cmdline: &str| {
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", cmdline, &srv.uri()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let out = run("write -P 0x55 0 1M");
    assert!(
        out.contains("write failed: No space left on device"),
        "qemu-io said: {out}"
    );
    // The server still serves, and a write that fits works.
    std::fs::remove_file(&filler).unwrap();
    let out = run("write -P 0x66 0 1M");
    assert!(out.contains("wrote 1048576/1048576 bytes"), "{out}");
    let out = run("read -P 0x66 0 1M");
    assert!(out.contains("read 1048576/1048576 bytes"), "{out}");
}

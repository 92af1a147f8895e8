//! The protocol, option by option and command by command, with a client of our own; and every
//! bad-input rule of the spec.

mod common;

use common::*;
use costack_nbd::handshake::META_ID;
use costack_nbd::proto::{
    self, cflag, cmd, err, info, opt, rep, tflag, MAX_PAYLOAD, STATE_HOLE, STATE_ZERO,
};
use costack_nbd::{Config, Export};
use std::io::{Read, Write};
use std::time::Duration;

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Handshake

#[test]
fn greeting_and_unknown_client_flags() {
    let srv = TestServer::memory(MIB);
    // Client::greet checks NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE | NO_ZEROES.
    let mut c = Client::greet(srv.addr);
    c.send_flags(proto::FLAG_C_FIXED_NEWSTYLE | 1 << 5);
    assert!(c.is_closed(), "unknown client flags drop the connection");
}

#[test]
fn export_name_with_and_without_zeroes() {
    let srv = TestServer::memory(MIB);
    for no_zeroes in [true, false] {
        let mut c = Client::greet(srv.addr);
        let mut f = proto::FLAG_C_FIXED_NEWSTYLE;
        if no_zeroes {
            f |= proto::FLAG_C_NO_ZEROES;
        }
        c.send_flags(f);
        c.send_option(opt::EXPORT_NAME, b"test");
        let mut b = vec![0u8; if no_zeroes { 10 } else { 134 }];
        c.s.read_exact(&mut b).unwrap();
        assert_eq!(proto::be64(&b[0..8]), MIB);
        let flags = proto::be16(&b[8..10]);
        assert_eq!(flags & tflag::HAS_FLAGS, tflag::HAS_FLAGS);
        assert_eq!(
            flags & tflag::SEND_DF,
            0,
            "no DF without structured replies"
        );
        assert!(b[10..].iter().all(|&x| x == 0));
        // Transmission works right after (so no stray zero bytes were sent).
        assert_eq!(c.write(0, b"hello"), 0);
        assert_eq!(c.read(0, 5).unwrap(), b"hello");
        c.disconnect();
    }
}

#[test]
fn export_name_default_and_unknown() {
    let srv = TestServer::memory(MIB);
    let mut c = Client::connect(srv.addr);
    c.send_option(opt::EXPORT_NAME, b"");
    let mut b = [0u8; 10];
    c.s.read_exact(&mut b).unwrap();
    assert_eq!(proto::be64(&b[0..8]), MIB);

    let mut c = Client::connect(srv.addr);
    c.send_option(opt::EXPORT_NAME, b"nope");
    assert!(c.is_closed(), "an unknown name ends the session");
}

#[test]
fn abort() {
    let srv = TestServer::memory(MIB);
    let mut c = Client::connect(srv.addr);
    let r = c.option(opt::ABORT, &[]);
    assert_eq!(r.typ, rep::ACK);
    assert!(c.is_closed());
    // Data with ABORT is ignored.
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.option(opt::ABORT, b"xyz").typ, rep::ACK);
}

#[test]
fn list() {
    let srv = TestServer::memory(MIB);
    let mut c = Client::connect(srv.addr);
    let r = c.option_all(opt::LIST, &[]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].typ, rep::SERVER);
    let n = proto::be32(&r[0].data[0..4]) as usize;
    assert_eq!(&r[0].data[4..4 + n], b"test");
    assert_eq!(r[1].typ, rep::ACK);
    // With data: ERR_INVALID, and the next option is still parsed.
    assert_eq!(c.option(opt::LIST, b"junk").typ, rep::ERR_INVALID);
    assert_eq!(c.option_all(opt::LIST, &[]).len(), 2);
}

#[test]
fn info_and_go() {
    let srv = TestServer::memory(3 * MIB);
    let mut c = Client::connect(srv.addr);
    let (r, i) = c.info(
        opt::INFO,
        "test",
        &[info::NAME, info::DESCRIPTION, info::BLOCK_SIZE],
    );
    assert_eq!(r.last().unwrap().typ, rep::ACK);
    assert_eq!(i.size, 3 * MIB);
    assert_eq!(i.block_size, Some((1, 4096, 32 * 1024 * 1024)));
    assert_eq!(i.name.as_deref(), Some("test"));
    assert!(i.description.unwrap().contains("memory"));
    let expect = tflag::HAS_FLAGS
        | tflag::SEND_FLUSH
        | tflag::SEND_FUA
        | tflag::SEND_TRIM
        | tflag::SEND_WRITE_ZEROES
        | tflag::SEND_FAST_ZERO
        | tflag::CAN_MULTI_CONN
        | tflag::SEND_CACHE;
    assert_eq!(i.flags, expect);
    // The default name, and no requests: EXPORT and BLOCK_SIZE only.
    let (r, i) = c.info(opt::INFO, "", &[]);
    assert_eq!(r.len(), 3);
    assert!(i.name.is_none() && i.description.is_none());
    // Unknown export, malformed body: errors, and negotiation goes on.
    let (r, _) = c.info(opt::INFO, "other", &[]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].typ, rep::ERR_UNKNOWN);
    let mut bad = info_body("test", &[info::NAME]);
    bad.push(0);
    assert_eq!(c.option(opt::INFO, &bad).typ, rep::ERR_INVALID);
    assert_eq!(
        c.option(opt::INFO, &[0, 0, 0, 9, b'x']).typ,
        rep::ERR_INVALID
    );
    let (r, _) = c.info(opt::GO, "other", &[]);
    assert_eq!(r[0].typ, rep::ERR_UNKNOWN);
    // GO enters transmission.
    let (r, i) = c.info(opt::GO, "test", &[]);
    assert_eq!(r.last().unwrap().typ, rep::ACK);
    assert_eq!(i.size, 3 * MIB);
    assert_eq!(c.write(MIB, b"abc"), 0);
    assert_eq!(c.read(MIB, 3).unwrap(), b"abc");
    c.disconnect();
}

#[test]
fn structured_reply_option() {
    let srv = TestServer::memory(MIB);
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.option(opt::STRUCTURED_REPLY, b"x").typ, rep::ERR_INVALID);
    assert_eq!(c.option(opt::STRUCTURED_REPLY, &[]).typ, rep::ACK);
    assert_eq!(c.option(opt::STRUCTURED_REPLY, &[]).typ, rep::ERR_INVALID);
    c.structured = true;
    let (_, i) = c.info(opt::GO, "test", &[]);
    assert_ne!(
        i.flags & tflag::SEND_DF,
        0,
        "DF is offered with structured replies"
    );
    // Reads now come back as structured chunks.
    c.write(0, &[7u8; 100]);
    let (e, replies) = c.call(cmd::READ, 0, 0, 100, &[]);
    assert_eq!(e, 0);
    assert!(matches!(
        &replies[0],
        Reply::Chunk {
            typ: proto::reply::TYPE_OFFSET_DATA,
            ..
        }
    ));
    assert_eq!(read_data(0, 100, &replies), vec![7u8; 100]);
    c.disconnect();
}

#[test]
fn meta_contexts() {
    let srv = TestServer::memory(MIB);
    let mut c = Client::connect(srv.addr);
    // Before STRUCTURED_REPLY: refused.
    assert_eq!(
        c.meta(opt::LIST_META_CONTEXT, "test", &[])[0].typ,
        rep::ERR_INVALID
    );
    assert_eq!(
        c.meta(opt::SET_META_CONTEXT, "test", &["base:allocation"])[0].typ,
        rep::ERR_INVALID
    );
    assert_eq!(c.option(opt::STRUCTURED_REPLY, &[]).typ, rep::ACK);
    c.structured = true;
    let ctx = |r: &OptReply| {
        assert_eq!(r.typ, rep::META_CONTEXT);
        (
            proto::be32(&r.data[0..4]),
            String::from_utf8(r.data[4..].to_vec()).unwrap(),
        )
    };
    // Listing: no query lists everything, `base:` too, unknown namespaces are ignored.
    for q in [
        &[][..],
        &["base:"][..],
        &["base:allocation", "x-other:thing"][..],
    ] {
        let r = c.meta(opt::LIST_META_CONTEXT, "test", q);
        assert_eq!(r.len(), 2, "{q:?}");
        assert_eq!(ctx(&r[0]), (0, "base:allocation".to_owned()));
        assert_eq!(r[1].typ, rep::ACK);
    }
    let r = c.meta(
        opt::LIST_META_CONTEXT,
        "",
        &["qemu:dirty-bitmap:a", "base:nope"],
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].typ, rep::ACK);
    assert_eq!(
        c.meta(opt::LIST_META_CONTEXT, "test", &["nocolon"])[0].typ,
        rep::ERR_INVALID
    );
    assert_eq!(
        c.meta(opt::LIST_META_CONTEXT, "other", &[])[0].typ,
        rep::ERR_UNKNOWN
    );
    let mut trunc = meta_body("test", &["base:allocation"]);
    trunc.pop();
    assert_eq!(
        c.option(opt::LIST_META_CONTEXT, &trunc).typ,
        rep::ERR_INVALID
    );
    // Setting: `base:` alone selects nothing; `base:allocation` gets an id.
    let r = c.meta(opt::SET_META_CONTEXT, "test", &["base:"]);
    assert_eq!(r.len(), 1);
    let r = c.meta(
        opt::SET_META_CONTEXT,
        "test",
        &["base:allocation", "base:allocation"],
    );
    assert_eq!(r.len(), 2);
    assert_eq!(ctx(&r[0]), (META_ID, "base:allocation".to_owned()));
    assert_ne!(META_ID, 0);
    let (_, i) = c.info(opt::GO, "test", &[]);
    assert_eq!(i.size, MIB);
    let (id, ext) = c.block_status(0, 0, 4096).unwrap();
    assert_eq!(id, META_ID);
    assert_eq!(ext, [(4096, STATE_HOLE | STATE_ZERO)]);
    c.disconnect();
}

#[test]
fn block_status_needs_a_selected_context() {
    let srv = TestServer::memory(MIB);
    // Selected, then replaced by an empty selection.
    let mut c = Client::connect(srv.addr);
    c.option(opt::STRUCTURED_REPLY, &[]);
    c.structured = true;
    assert_eq!(
        c.meta(opt::SET_META_CONTEXT, "test", &["base:allocation"])
            .len(),
        2
    );
    assert_eq!(c.meta(opt::SET_META_CONTEXT, "test", &[]).len(), 1);
    c.info(opt::GO, "test", &[]);
    assert_eq!(c.block_status(0, 0, 4096), Err(err::EINVAL));
    // Never selected.
    let (mut c, _) = Client::open(srv.addr, false);
    assert_eq!(c.simple(cmd::BLOCK_STATUS, 0, 0, 4096), err::EINVAL);
}

#[test]
fn starttls_extended_headers_and_unknown_options() {
    let srv = TestServer::memory(MIB);
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.option(opt::STARTTLS, &[]).typ, rep::ERR_UNSUP);
    assert_eq!(c.option(opt::STARTTLS, b"x").typ, rep::ERR_INVALID);
    assert_eq!(c.option(opt::EXTENDED_HEADERS, &[]).typ, rep::ERR_UNSUP);
    assert_eq!(c.option(opt::PEEK_EXPORT, &[]).typ, rep::ERR_UNSUP);
    assert_eq!(c.option(0x1234, &[1, 2, 3, 4, 5]).typ, rep::ERR_UNSUP);
    assert_eq!(
        c.option(0xffff_ffff, &vec![9u8; 70_000]).typ,
        rep::ERR_UNSUP
    );
    // Known option with more data than the server stores: skipped, refused.
    assert_eq!(
        c.option(opt::INFO, &vec![0u8; 100_000]).typ,
        rep::ERR_TOO_BIG
    );
    // Each time the next option is still parsed.
    let (r, _) = c.info(opt::GO, "test", &[]);
    assert_eq!(r.last().unwrap().typ, rep::ACK);
    assert_eq!(c.write(0, b"ok"), 0);
    c.disconnect();
}

#[test]
fn bad_option_magic_or_huge_option_disconnects() {
    let srv = TestServer::memory(MIB);
    let mut c = Client::connect(srv.addr);
    c.s.write_all(&[0u8; 16]).unwrap();
    assert!(c.is_closed());
    let mut c = Client::connect(srv.addr);
    let mut b = proto::IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&opt::LIST.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&b).unwrap();
    assert!(c.is_closed(), "4 GiB of option data is not read");
    // The server is still there.
    let (c, _) = Client::open(srv.addr, true);
    c.disconnect();
}

#[test]
fn read_only_export_flags() {
    let srv = TestServer::memory_ro(MIB);
    let (_, i) = Client::open(srv.addr, true);
    assert_ne!(i.flags & tflag::READ_ONLY, 0);
    assert_eq!(
        i.flags & (tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES | tflag::SEND_FAST_ZERO),
        0
    );
    assert_ne!(i.flags & tflag::SEND_FLUSH, 0);
}

// ---------------------------------------------------------------------------------------------
// Commands

fn each_mode(f: impl Fn(&mut Client, bool)) {
    let srv = TestServer::memory(4 * MIB);
    for structured in [false, true] {
        let (mut c, _) = Client::open(srv.addr, structured);
        f(&mut c, structured);
        c.disconnect();
    }
}

#[test]
fn read_write_flush_fua() {
    each_mode(|c, _| {
        let data = pattern(200_000, 3);
        assert_eq!(c.write(12_345, &data), 0);
        assert_eq!(c.read(12_345, 200_000).unwrap(), data);
        assert_eq!(c.write_fua(0, b"x"), 0);
        assert_eq!(c.simple(cmd::FLUSH, 0, 0, 0), 0);
        assert_eq!(c.simple(cmd::FLUSH, cflag::FUA, 0, 0), 0);
        // 1-byte unaligned I/O, the last byte.
        assert_eq!(c.write(4 * MIB - 1, b"Z"), 0);
        assert_eq!(c.read(4 * MIB - 1, 1).unwrap(), b"Z");
        // Zero-length read and write.
        assert_eq!(c.read(0, 0).unwrap(), b"");
        assert_eq!(c.write(0, b""), 0);
        // A whole 32 MiB is allowed (on a 4 MiB export: past the end, so a range error).
        assert_eq!(c.read(0, MAX_PAYLOAD), Err(err::EINVAL));
    });
}

#[test]
fn read_with_df_flag() {
    let srv = TestServer::memory(MIB);
    let (mut c, _) = Client::open(srv.addr, true);
    c.write(0, &[1u8; 70_000]);
    let (e, replies) = c.call(cmd::READ, cflag::DF, 0, 70_000, &[]);
    assert_eq!(e, 0);
    let content = replies
        .iter()
        .filter(|r| matches!(r, Reply::Chunk { typ, .. } if *typ != proto::reply::TYPE_NONE))
        .count();
    assert_eq!(content, 1, "DF: at most one content chunk");
    assert_eq!(read_data(0, 70_000, &replies), vec![1u8; 70_000]);
}

#[test]
fn trim_zeroes_cache_and_block_status() {
    let srv = TestServer::memory(MIB);
    let (mut c, _) = Client::open(srv.addr, true);
    let (_, ext) = c.block_status(0, 0, MIB as u32).unwrap();
    assert_eq!(ext, [(MIB as u32, STATE_HOLE | STATE_ZERO)]);
    c.write(0, &vec![0xaa; 256 * 1024]);
    let (_, ext) = c.block_status(0, 0, MIB as u32).unwrap();
    assert_eq!(
        ext,
        [(256 * 1024, 0), (768 * 1024, STATE_HOLE | STATE_ZERO)]
    );
    // REQ_ONE: exactly one extent, no longer than asked.
    let (_, ext) = c.block_status(cflag::REQ_ONE, 0, 4096).unwrap();
    assert_eq!(ext, [(4096, 0)]);
    let (_, ext) = c
        .block_status(cflag::REQ_ONE, 100_000, MIB as u32 - 100_000)
        .unwrap();
    assert_eq!(ext, [(256 * 1024 - 100_000, 0)]);
    // TRIM: whole chunks become holes again.
    assert_eq!(c.simple(cmd::TRIM, 0, 0, 128 * 1024), 0);
    let (_, ext) = c.block_status(0, 0, MIB as u32).unwrap();
    assert_eq!(ext[0], (128 * 1024, STATE_HOLE | STATE_ZERO));
    // WRITE_ZEROES: reads back as zero; NO_HOLE keeps it allocated; FAST_ZERO works here.
    assert_eq!(
        c.simple(cmd::WRITE_ZEROES, cflag::NO_HOLE, 128 * 1024, 64 * 1024),
        0
    );
    assert_eq!(c.read(128 * 1024, 64 * 1024).unwrap(), vec![0u8; 64 * 1024]);
    let (_, ext) = c.block_status(cflag::REQ_ONE, 128 * 1024, 4096).unwrap();
    assert_eq!(ext, [(4096, 0)]);
    assert_eq!(
        c.simple(
            cmd::WRITE_ZEROES,
            cflag::FAST_ZERO | cflag::FUA,
            192 * 1024,
            64 * 1024
        ),
        0
    );
    let (_, ext) = c.block_status(cflag::REQ_ONE, 192 * 1024, 4096).unwrap();
    assert_eq!(ext, [(4096, STATE_HOLE | STATE_ZERO)]);
    // Unaligned zeroing inside data.
    c.write(0, &[0xaa; 20]);
    assert_eq!(c.simple(cmd::WRITE_ZEROES, 0, 10, 5), 0);
    let r = c.read(0, 20).unwrap();
    assert_eq!(&r[..10], &[0xaa; 10]);
    assert_eq!(&r[10..15], &[0; 5]);
    assert_eq!(&r[15..], &[0xaa; 5]);
    assert_eq!(c.simple(cmd::CACHE, 0, 0, MIB as u32), 0);
    assert_eq!(c.simple(cmd::TRIM, cflag::FUA, 0, 0), 0);
    c.disconnect();
}

#[test]
fn trim_and_zero_larger_than_a_payload() {
    let srv = TestServer::memory(64 * MIB);
    let (mut c, _) = Client::open(srv.addr, true);
    c.write(40 * MIB, b"data");
    assert_eq!(c.simple(cmd::WRITE_ZEROES, 0, 0, 64 * MIB as u32), 0);
    assert_eq!(c.read(40 * MIB, 4).unwrap(), [0; 4]);
    assert_eq!(c.simple(cmd::TRIM, 0, 0, 64 * MIB as u32), 0);
    c.disconnect();
}

#[test]
fn many_requests_in_flight_out_of_order() {
    let srv = TestServer::memory(4 * MIB);
    for structured in [false, true] {
        let (mut c, _) = Client::open(srv.addr, structured);
        // 200 pipelined writes then 200 reads: more than the 16 in flight, all answered.
        for i in 0..200u64 {
            let d = pattern(4096, i as u8);
            c.send(cmd::WRITE, 0, 1000 + i, i * 4096, 4096, &d);
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let r = c.read_reply().unwrap();
            assert_eq!(r.error(), 0);
            assert!(seen.insert(r.cookie()));
        }
        for i in 0..200u64 {
            c.send(cmd::READ, 0, 5000 + i, i * 4096, 4096, &[]);
        }
        for _ in 0..200 {
            let r = c.read_reply().unwrap();
            let i = r.cookie() - 5000;
            assert_eq!(read_data(i * 4096, 4096, &[r]), pattern(4096, i as u8));
        }
        c.disconnect();
    }
}

#[test]
fn disc_finishes_requests_in_flight() {
    let srv = TestServer::memory(MIB);
    let (mut c, _) = Client::open(srv.addr, true);
    for i in 0..10u64 {
        c.send(cmd::WRITE, 0, i + 1, i * 512, 512, &[i as u8; 512]);
    }
    c.send(cmd::DISC, 0, 99, 0, 0, &[]);
    for _ in 0..10 {
        assert_eq!(c.read_reply().unwrap().error(), 0);
    }
    assert!(c.is_closed());
    let (mut c, _) = Client::open(srv.addr, false);
    for i in 0..10u64 {
        assert_eq!(c.read(i * 512, 512).unwrap(), vec![i as u8; 512]);
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn out_of_range_requests() {
    each_mode(|c, structured| {
        let end = 4 * MIB;
        assert_eq!(c.read(end - 10, 11), Err(err::EINVAL));
        assert_eq!(c.read(end, 1), Err(err::EINVAL));
        assert_eq!(c.read(u64::MAX, 2), Err(err::EINVAL));
        assert_eq!(c.simple(cmd::TRIM, 0, end, 1), err::EINVAL);
        assert_eq!(c.simple(cmd::CACHE, 0, end - 1, 2), err::EINVAL);
        if structured {
            assert_eq!(c.block_status(0, end, 1), Err(err::EINVAL));
            assert_eq!(c.block_status(0, 0, 0), Err(err::EINVAL));
        }
        // Writes past the end: ENOSPC, and the payload is consumed (the next request works).
        assert_eq!(c.write(end - 2, b"abc"), err::ENOSPC);
        assert_eq!(c.write(u64::MAX - 1, b"abc"), err::ENOSPC);
        assert_eq!(c.simple(cmd::WRITE_ZEROES, 0, end, 1), err::ENOSPC);
        assert_eq!(c.simple(cmd::WRITE_ZEROES, 0, u64::MAX, 2), err::ENOSPC);
        assert_eq!(c.read(end - 2, 2).unwrap(), [0, 0], "nothing was written");
        // Error chunks carry a message once structured replies are on.
        if structured {
            let (_, r) = c.call(cmd::READ, 0, end, 1, &[]);
            let Reply::Chunk { typ, payload, .. } = &r[0] else {
                panic!()
            };
            assert_eq!(*typ, proto::reply::TYPE_ERROR);
            let n = proto::be16(&payload[4..6]) as usize;
            assert!(std::str::from_utf8(&payload[6..6 + n])
                .unwrap()
                .contains("end"));
        }
    });
}

#[test]
fn read_only_refuses_writes() {
    let srv = TestServer::memory_ro(MIB);
    for structured in [false, true] {
        let (mut c, _) = Client::open(srv.addr, structured);
        assert_eq!(c.write(0, b"nope"), err::EPERM);
        assert_eq!(c.simple(cmd::WRITE_ZEROES, 0, 0, 4096), err::EPERM);
        assert_eq!(c.simple(cmd::TRIM, 0, 0, 4096), err::EPERM);
        assert_eq!(c.read(0, 4).unwrap(), [0; 4]);
        assert_eq!(c.simple(cmd::FLUSH, 0, 0, 0), 0);
        c.disconnect();
    }
}

#[test]
fn unknown_commands_and_flags() {
    each_mode(|c, structured| {
        assert_eq!(c.simple(99, 0, 0, 0), err::EINVAL);
        assert_eq!(c.simple(cmd::READ, 1 << 9, 0, 4), err::EINVAL);
        assert_eq!(c.simple(cmd::READ, cflag::NO_HOLE, 0, 4), err::EINVAL);
        assert_eq!(c.simple(cmd::FLUSH, cflag::REQ_ONE, 0, 0), err::EINVAL);
        assert_eq!(c.simple(cmd::TRIM, cflag::FAST_ZERO, 0, 4), err::EINVAL);
        // A write with a bad flag: refused, its payload skipped.
        assert_eq!(
            c.call(cmd::WRITE, cflag::NO_HOLE, 0, 4, b"abcd").0,
            err::EINVAL
        );
        assert_eq!(c.read(0, 4).unwrap(), [0; 4]);
        // DF only with structured replies.
        let df = c.call(cmd::READ, cflag::DF, 0, 4, &[]).0;
        assert_eq!(df, if structured { 0 } else { err::EINVAL });
    });
}

#[test]
fn oversized_read_is_refused() {
    let srv = TestServer::memory(64 * MIB);
    for structured in [false, true] {
        let (mut c, _) = Client::open(srv.addr, structured);
        assert_eq!(c.read(0, MAX_PAYLOAD + 1), Err(err::EINVAL));
        assert_eq!(c.read(0, MAX_PAYLOAD).unwrap().len(), MAX_PAYLOAD as usize);
        c.disconnect();
    }
}

#[test]
fn oversized_write_is_refused_and_disconnects() {
    let srv = TestServer::memory(64 * MIB);
    let (mut c, _) = Client::open(srv.addr, true);
    // The header claims 32 MiB + 1; the client sends a little of it.
    c.send(cmd::WRITE, 0, 42, 0, MAX_PAYLOAD + 1, &[0xff; 4096]);
    let r = c.read_reply().unwrap();
    assert_eq!(r.cookie(), 42);
    assert_eq!(r.error(), err::EINVAL);
    assert!(c.is_closed());
    let (mut c, _) = Client::open(srv.addr, false);
    assert_eq!(
        c.read(0, 4096).unwrap(),
        vec![0u8; 4096],
        "nothing was written"
    );
    // Exactly 32 MiB is fine.
    let big = vec![0x11u8; MAX_PAYLOAD as usize];
    assert_eq!(c.write(0, &big), 0);
    c.disconnect();
}

#[test]
fn bad_request_magic_disconnects_only_that_connection() {
    let srv = TestServer::memory(MIB);
    let (mut good, _) = Client::open(srv.addr, true);
    assert_eq!(good.write_fua(0, b"precious"), 0);
    let (mut bad, _) = Client::open(srv.addr, true);
    bad.s.write_all(&[0x42u8; 28]).unwrap();
    assert!(bad.is_closed());
    assert_eq!(good.read(0, 8).unwrap(), b"precious");
    good.disconnect();
}

#[test]
fn client_gone_mid_write_harms_nobody() {
    let srv = TestServer::memory(8 * MIB);
    let (mut good, _) = Client::open(srv.addr, true);
    let keep = pattern(MIB as usize, 9);
    assert_eq!(good.write(0, &keep), 0);
    for structured in [false, true] {
        let (mut c, _) = Client::open(srv.addr, structured);
        // Half of a 1 MiB write, then the client vanishes.
        c.send(
            cmd::WRITE,
            0,
            1,
            2 * MIB,
            MIB as u32,
            &vec![0xcc; MIB as usize / 2],
        );
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(good.read(0, MIB as u32).unwrap(), keep);
    assert_eq!(
        good.read(2 * MIB, 4096).unwrap(),
        vec![0u8; 4096],
        "the half write never happened"
    );
    // New clients are still served.
    let (mut c, _) = Client::open(srv.addr, false);
    assert_eq!(c.read(0, 16).unwrap(), &keep[..16]);
    c.disconnect();
    good.disconnect();
}

#[test]
fn connection_reset_mid_request_stream() {
    let srv = TestServer::memory(MIB);
    let (mut c, _) = Client::open(srv.addr, true);
    // Half a header.
    c.s.write_all(&proto::REQUEST_MAGIC.to_be_bytes()).unwrap();
    drop(c);
    let (mut c, _) = Client::open(srv.addr, true);
    assert_eq!(c.write(0, b"still here"), 0);
    c.disconnect();
}

// ---------------------------------------------------------------------------------------------
// Files, threads, shutdown

#[test]
fn file_export_multi_conn_and_durability() {
    let f = TempFile::with_data("mc", &vec![0u8; 8 * MIB as usize]);
    let srv = TestServer::file(f.path(), 2);
    // Two connections land on different loops (threads): a write acknowledged on one, then a
    // flush, is seen by the other.
    let (mut a, ia) = Client::open(srv.addr, true);
    let (mut b, _) = Client::open(srv.addr, false);
    assert_eq!(ia.size, 8 * MIB);
    assert_eq!(ia.flags & tflag::CAN_MULTI_CONN, tflag::CAN_MULTI_CONN);
    let d = pattern(300_000, 1);
    assert_eq!(a.write(4096, &d), 0);
    assert_eq!(a.simple(cmd::FLUSH, 0, 0, 0), 0);
    assert_eq!(b.read(4096, 300_000).unwrap(), d);
    assert_eq!(b.write_fua(MIB, b"fua"), 0);
    assert_eq!(a.read(MIB, 3).unwrap(), b"fua");
    // What was acknowledged is in the file.
    let on_disk = std::fs::read(f.path()).unwrap();
    assert_eq!(&on_disk[4096..4096 + 300_000], &d[..]);
    assert_eq!(&on_disk[MIB as usize..MIB as usize + 3], b"fua");
    // Zeroes, trim and block status on a file.
    assert_eq!(a.simple(cmd::WRITE_ZEROES, 0, 0, 2 * MIB as u32), 0);
    assert_eq!(a.read(4096, 4096).unwrap(), vec![0u8; 4096]);
    assert_eq!(a.simple(cmd::WRITE_ZEROES, cflag::NO_HOLE, 0, 4096), 0);
    let r = a.simple(cmd::WRITE_ZEROES, cflag::FAST_ZERO, 2 * MIB, 4096);
    assert!(
        r == 0 || r == err::ENOTSUP,
        "fast zero: done or refused quickly, got {r}"
    );
    assert_eq!(a.simple(cmd::TRIM, 0, 4 * MIB, MIB as u32), 0);
    let (_, ext) = a.block_status(0, 0, 8 * MIB as u32).unwrap();
    let total: u64 = ext.iter().map(|e| u64::from(e.0)).sum();
    assert_eq!(total, 8 * MIB);
    assert_eq!(a.simple(cmd::CACHE, 0, 0, MIB as u32), 0);
    a.disconnect();
    b.disconnect();
    srv.shutdown();
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let f = TempFile::with_data("stop", &vec![0u8; 4 * MIB as usize]);
    let srv = TestServer::file(f.path(), 1);
    let (mut c, _) = Client::open(srv.addr, true);
    // A connection still in the handshake is simply closed.
    let mut idle = Client::connect(srv.addr);
    for i in 0..16u64 {
        c.send(
            cmd::WRITE,
            cflag::FUA,
            i + 1,
            i * 4096,
            4096,
            &[i as u8 + 1; 4096],
        );
    }
    // Once the first reply is back the server has taken in all 16 (they were sent at once);
    // stop it while the others may still be running.
    let first = c.read_reply().unwrap();
    assert_eq!(first.error(), 0);
    let stopper = std::thread::spawn(move || srv.shutdown());
    let mut acked = vec![first.cookie()];
    let mut answered = 1;
    while let Ok(r) = c.read_reply() {
        answered += 1;
        match r.error() {
            0 => acked.push(r.cookie()),
            e => assert_eq!(e, err::ESHUTDOWN),
        }
    }
    stopper.join().unwrap();
    assert!(idle.is_closed());
    assert_eq!(
        answered, 16,
        "every request was answered (done, or ESHUTDOWN)"
    );
    // Every write that was acknowledged is in the file.
    let on_disk = std::fs::read(f.path()).unwrap();
    for cookie in acked {
        let i = (cookie - 1) as usize;
        assert_eq!(on_disk[i * 4096..(i + 1) * 4096], [i as u8 + 1; 4096]);
    }
}

#[test]
fn many_connections_on_many_threads() {
    let srv = TestServer::start(
        Export::memory("test", 16 * MIB, false).unwrap(),
        Config {
            threads: 3,
            max_in_flight: 4,
            ..Config::default()
        },
    );
    let addr = srv.addr;
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            std::thread::spawn(move || {
                let (mut c, _) = Client::open(addr, w % 2 == 0);
                for i in 0..32u64 {
                    let off = (w * 32 + i) * 8192;
                    c.send(cmd::WRITE, 0, i, off, 8192, &pattern(8192, (w + i) as u8));
                }
                for _ in 0..32 {
                    assert_eq!(c.read_reply().unwrap().error(), 0);
                }
                for i in 0..32u64 {
                    let off = (w * 32 + i) * 8192;
                    assert_eq!(c.read(off, 8192).unwrap(), pattern(8192, (w + i) as u8));
                }
                c.disconnect();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn file_io_through_the_loop_when_the_page_cache_cannot_help() {
    use costack_nbd::WritePath;
    use std::os::fd::AsRawFd;
    let f = TempFile::with_data("aio", &pattern(8 * MIB as usize, 5));
    let srv = TestServer::start(
        Export::file("test", f.path(), false, WritePath::Aio).unwrap(),
        Config::default(),
    );
    let (mut c, _) = Client::open(srv.addr, true);
    // Writes go through the loop's file I/O (io_uring or its workers).
    let d = pattern(3 * MIB as usize, 6);
    assert_eq!(c.write(MIB, &d), 0);
    assert_eq!(c.write_fua(7, b"unaligned"), 0);
    assert_eq!(c.simple(cmd::FLUSH, 0, 0, 0), 0);
    // Push the file out of the page cache: reads then miss and go through the loop too.
    let file = std::fs::File::open(f.path()).unwrap();
    file.sync_all().unwrap();
    // SAFETY: posix_fadvise on a descriptor we own; it passes no memory.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut want = pattern(8 * MIB as usize, 5);
    want[MIB as usize..4 * MIB as usize].copy_from_slice(&d);
    want[7..16].copy_from_slice(b"unaligned");
    for (off, len) in [(0u64, 4096u32), (MIB - 100, 200), (0, 8 * MIB as u32)] {
        let got = c.read(off, len).unwrap();
        assert!(
            got == want[off as usize..off as usize + len as usize],
            "read {off}+{len}"
        );
    }
    c.disconnect();
}

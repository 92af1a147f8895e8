//! The transmission phase on the wire: request headers, the rules a request must follow
//! ([`check`]), simple replies and structured reply chunks, and the error values replies
//! carry.
//!
//! The connection ([`server`](crate::server)) reads a header, decodes and checks it here, runs
//! it, and sends what the encoders here build.
//!
//! May import: the sibling `basics` only.

use super::basics::{be16, be32, be64, MAX_PAYLOAD, MAX_STRING};

/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Command types (transmission phase).
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write (payload follows the header).
    pub const WRITE: u16 = 1;
    /// Disconnect (no reply).
    pub const DISC: u16 = 2;
    /// Flush to stable storage.
    pub const FLUSH: u16 = 3;
    /// Discard (advisory).
    pub const TRIM: u16 = 4;
    /// Prefetch hint.
    pub const CACHE: u16 = 5;
    /// Write zeroes, no payload.
    pub const WRITE_ZEROES: u16 = 6;
    /// Query allocation status.
    pub const BLOCK_STATUS: u16 = 7;

    /// The command's name, for messages.
    pub fn name(c: u16) -> &'static str {
        match c {
            READ => "READ",
            WRITE => "WRITE",
            DISC => "DISC",
            FLUSH => "FLUSH",
            TRIM => "TRIM",
            CACHE => "CACHE",
            WRITE_ZEROES => "WRITE_ZEROES",
            BLOCK_STATUS => "BLOCK_STATUS",
            _ => "unknown",
        }
    }
}

/// Command flags.
pub mod cflag {
    /// Force unit access: persist before replying.
    pub const FUA: u16 = 1 << 0;
    /// Write-zeroes must not create a hole.
    pub const NO_HOLE: u16 = 1 << 1;
    /// Don't fragment the read reply.
    pub const DF: u16 = 1 << 2;
    /// One extent only in a block-status reply.
    pub const REQ_ONE: u16 = 1 << 3;
    /// Fail write-zeroes with `ENOTSUP` unless it is fast.
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk types and flags.
pub mod reply {
    /// Flag: last chunk of the reply.
    pub const FLAG_DONE: u16 = 1 << 0;
    /// No payload; final chunk.
    pub const TYPE_NONE: u16 = 0;
    /// Data at an offset.
    pub const TYPE_OFFSET_DATA: u16 = 1;
    /// Zeroes at an offset.
    pub const TYPE_OFFSET_HOLE: u16 = 2;
    /// Extents of one metadata context.
    pub const TYPE_BLOCK_STATUS: u16 = 5;
    /// An error with a message.
    pub const TYPE_ERROR: u16 = (1 << 15) + 1;
    /// An error at an offset.
    pub const TYPE_ERROR_OFFSET: u16 = (1 << 15) + 2;
}

/// Error values of replies.
pub mod err {
    /// Operation not permitted.
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Cannot allocate memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// No space left on device.
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Operation not supported.
    pub const ENOTSUP: u32 = 95;
    /// Server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// `base:allocation` flag: the extent is a hole.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the extent reads as zeroes.
pub const STATE_ZERO: u32 = 1 << 1;

/// Size of a request header on the wire.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Size of a structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;

/// Maps an I/O error of the backend to an NBD error value, as the spec suggests
/// (`EDQUOT` and `EFBIG` become `ENOSPC`; anything unlisted becomes `EIO`).
pub fn errno_to_nbd(e: &std::io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES | libc::EROFS) => err::EPERM,
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => err::ENOSPC,
        Some(libc::ENOMEM) => err::ENOMEM,
        Some(libc::EINVAL) => err::EINVAL,
        Some(libc::EOVERFLOW) => err::EOVERFLOW,
        Some(libc::EOPNOTSUPP) => err::ENOTSUP,
        Some(libc::ESHUTDOWN) => err::ESHUTDOWN,
        _ => match e.kind() {
            std::io::ErrorKind::PermissionDenied => err::EPERM,
            std::io::ErrorKind::InvalidInput => err::EINVAL,
            std::io::ErrorKind::Unsupported => err::ENOTSUP,
            std::io::ErrorKind::OutOfMemory => err::ENOMEM,
            _ => err::EIO,
        },
    }
}

/// The error a reply to `req` carries when the backend failed it with `e`: [`errno_to_nbd`],
/// kept within what the spec lets a server say for that request. `EOVERFLOW` is only for an
/// oversized request (which [`check`] refuses with `EINVAL` before any backend sees it) and
/// `ENOTSUP` only for a `WRITE_ZEROES` with `FAST_ZERO` (the spec: a server "SHOULD NOT
/// return" either otherwise), so a backend's `EOVERFLOW`, or `ENOTSUP` on any other request,
/// becomes `EINVAL`. `ESHUTDOWN` tells the client that the server is stopping (it must then
/// disconnect); a backend's `ESHUTDOWN` (a transport under a network file system, say) is not
/// that, and becomes `EIO`.
pub fn reply_error(req: &Request, e: &std::io::Error) -> u32 {
    match errno_to_nbd(e) {
        err::EOVERFLOW => err::EINVAL,
        err::ESHUTDOWN => err::EIO,
        err::ENOTSUP if !(req.typ == cmd::WRITE_ZEROES && req.flags & cflag::FAST_ZERO != 0) => {
            err::EINVAL
        }
        v => v,
    }
}

/// A transmission request header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`cflag`).
    pub flags: u16,
    /// Command type (`cmd`).
    pub typ: u16,
    /// The client's opaque cookie, echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes (payload length for `WRITE`).
    pub length: u32,
}

impl Request {
    /// Decodes a 28-byte header; `None` if the magic is wrong (the connection must then be
    /// dropped: nothing after it can be trusted to be a header).
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Option<Request> {
        if be32(&b[0..4]) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: be16(&b[4..6]),
            typ: be16(&b[6..8]),
            cookie: be64(&b[8..16]),
            offset: be64(&b[16..24]),
            length: be32(&b[24..28]),
        })
    }

    /// Encodes the header (the client side, for tests and tools).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.typ.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// What the connection knows when it checks a request: the export and what was negotiated.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Export size in bytes.
    pub size: u64,
    /// The export refuses writes.
    pub read_only: bool,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// A metadata context (`base:allocation`) was selected.
    pub meta: bool,
}

/// The outcome of checking a request before running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Run it.
    Ok,
    /// Reply with this error (and the message, for structured replies); the connection goes
    /// on. For a `WRITE`, the payload is read and thrown away first.
    Error(u32, &'static str),
    /// Reply with this error, then drop the connection: a `WRITE` whose payload is too large to
    /// read, so the stream cannot be resynchronised.
    ErrorThenDisconnect(u32, &'static str),
}

/// The command flags each command accepts (FUA is accepted on every command, as the spec
/// requires once `SEND_FUA` is advertised).
fn allowed_flags(typ: u16, lim: &Limits) -> u16 {
    let base = cflag::FUA;
    match typ {
        cmd::READ if lim.structured => base | cflag::DF,
        cmd::WRITE_ZEROES => base | cflag::NO_HOLE | cflag::FAST_ZERO,
        cmd::BLOCK_STATUS => base | cflag::REQ_ONE,
        _ => base,
    }
}

/// Checks a request against the spec's rules. The first rule a request breaks decides its
/// error, and the rules are tried in this order:
///
/// 1. an unknown command: `EINVAL`;
/// 2. a `WRITE` over [`MAX_PAYLOAD`]: `EINVAL`, then disconnect (its payload is not read, so
///    nothing after it can be parsed) — whatever its flags, since this comes first;
/// 3. a flag not documented for the command: `EINVAL` (`FUA` is valid on every command, `DF`
///    on `READ` once structured replies are on, `NO_HOLE` and `FAST_ZERO` on `WRITE_ZEROES`,
///    `REQ_ONE` on `BLOCK_STATUS`);
/// 4. a `READ` over [`MAX_PAYLOAD`]: `EINVAL`;
/// 5. `WRITE`, `WRITE_ZEROES` or `TRIM` on a read-only export: `EPERM`;
/// 6. a range past the end of the export (or whose end overflows): `ENOSPC` for `WRITE` and
///    `WRITE_ZEROES`, `EINVAL` for `READ`, `TRIM`, `CACHE` and `BLOCK_STATUS`;
/// 7. `BLOCK_STATUS` without a selected metadata context: `EINVAL`; then one of zero bytes:
///    `EINVAL`.
///
/// `DISC` and `FLUSH` ignore their (reserved) offset and length.
pub fn check(req: &Request, lim: &Limits) -> Check {
    use Check::*;
    let known = matches!(
        req.typ,
        cmd::READ
            | cmd::WRITE
            | cmd::DISC
            | cmd::FLUSH
            | cmd::TRIM
            | cmd::CACHE
            | cmd::WRITE_ZEROES
            | cmd::BLOCK_STATUS
    );
    if !known {
        return Error(err::EINVAL, "unknown command");
    }
    if req.typ == cmd::WRITE && req.length > MAX_PAYLOAD {
        return ErrorThenDisconnect(err::EINVAL, "write payload larger than 32 MiB");
    }
    if req.flags & !allowed_flags(req.typ, lim) != 0 {
        return Error(err::EINVAL, "command flag not valid for this command");
    }
    if req.typ == cmd::READ && req.length > MAX_PAYLOAD {
        return Error(err::EINVAL, "read larger than 32 MiB");
    }
    let writes = matches!(req.typ, cmd::WRITE | cmd::WRITE_ZEROES | cmd::TRIM);
    if writes && lim.read_only {
        return Error(err::EPERM, "the export is read-only");
    }
    let ranged = !matches!(req.typ, cmd::DISC | cmd::FLUSH);
    if ranged {
        let past_end = req
            .offset
            .checked_add(u64::from(req.length))
            .is_none_or(|end| end > lim.size);
        if past_end {
            return match req.typ {
                cmd::WRITE | cmd::WRITE_ZEROES => Error(err::ENOSPC, "past the end of the export"),
                _ => Error(err::EINVAL, "past the end of the export"),
            };
        }
    }
    if req.typ == cmd::BLOCK_STATUS {
        if !lim.meta {
            return Error(err::EINVAL, "no metadata context was selected");
        }
        if req.length == 0 {
            return Error(err::EINVAL, "block status of zero bytes");
        }
    }
    Ok
}

/// Encodes a simple reply header.
pub fn simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// Encodes a structured reply chunk header for a payload of `len` bytes.
pub fn chunk_header(flags: u16, typ: u16, cookie: u64, len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&typ.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// The header of a final `OFFSET_DATA` chunk carrying `len` data bytes at `offset`: the chunk
/// header and the 8-byte offset, 28 bytes in all.
pub fn offset_data_header(cookie: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&chunk_header(
        reply::FLAG_DONE,
        reply::TYPE_OFFSET_DATA,
        cookie,
        len + 8,
    ));
    b[20..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// A complete final `ERROR` chunk with a message (truncated to [`MAX_STRING`]).
pub fn error_chunk(cookie: u64, error: u32, msg: &str) -> Vec<u8> {
    let msg = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
    let mut b = Vec::with_capacity(CHUNK_HEADER_LEN + 6 + msg.len());
    b.extend_from_slice(&chunk_header(
        reply::FLAG_DONE,
        reply::TYPE_ERROR,
        cookie,
        6 + msg.len() as u32,
    ));
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

/// One extent of a block-status reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes (nonzero).
    pub length: u32,
    /// `STATE_HOLE` / `STATE_ZERO` bits.
    pub flags: u32,
}

/// A complete final `BLOCK_STATUS` chunk for context `id`.
pub fn block_status_chunk(cookie: u64, id: u32, extents: &[Extent]) -> Vec<u8> {
    let len = 4 + 8 * extents.len();
    let mut b = Vec::with_capacity(CHUNK_HEADER_LEN + len);
    b.extend_from_slice(&chunk_header(
        reply::FLAG_DONE,
        reply::TYPE_BLOCK_STATUS,
        cookie,
        len as u32,
    ));
    b.extend_from_slice(&id.to_be_bytes());
    for e in extents {
        b.extend_from_slice(&e.length.to_be_bytes());
        b.extend_from_slice(&e.flags.to_be_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            size: 1 << 20,
            read_only: false,
            structured: true,
            meta: true,
        }
    }

    fn req(typ: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            typ,
            cookie: 7,
            offset,
            length,
        }
    }

    #[test]
    fn request_round_trip() {
        let r = req(cmd::WRITE, cflag::FUA, 0x1234_5678_9abc, 4096);
        assert_eq!(Request::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[0] ^= 1;
        assert_eq!(Request::decode(&bad), None);
    }

    #[test]
    fn checks_follow_the_spec() {
        let l = lim();
        assert_eq!(check(&req(cmd::READ, 0, 0, 4096), &l), Check::Ok);
        assert_eq!(check(&req(cmd::READ, 0, (1 << 20) - 1, 1), &l), Check::Ok);
        assert!(matches!(
            check(&req(cmd::READ, 0, 1 << 20, 1), &l),
            Check::Error(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(cmd::WRITE, 0, 1 << 20, 1), &l),
            Check::Error(err::ENOSPC, _)
        ));
        assert!(matches!(
            check(&req(cmd::WRITE_ZEROES, 0, u64::MAX, 2), &l),
            Check::Error(err::ENOSPC, _)
        ));
        assert!(matches!(
            check(&req(cmd::TRIM, 0, 1 << 20, 1), &l),
            Check::Error(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(cmd::CACHE, 0, 1 << 20, 1), &l),
            Check::Error(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(cmd::BLOCK_STATUS, 0, 1 << 20, 1), &l),
            Check::Error(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(99, 0, 0, 0), &l),
            Check::Error(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(cmd::READ, cflag::NO_HOLE, 0, 1), &l),
            Check::Error(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(cmd::READ, 1 << 9, 0, 1), &l),
            Check::Error(err::EINVAL, _)
        ));
        assert_eq!(
            check(&req(cmd::READ, cflag::DF | cflag::FUA, 0, 1), &l),
            Check::Ok
        );
        assert_eq!(check(&req(cmd::FLUSH, cflag::FUA, 0, 0), &l), Check::Ok);
        assert_eq!(
            check(
                &req(cmd::WRITE_ZEROES, cflag::NO_HOLE | cflag::FAST_ZERO, 0, 1),
                &l
            ),
            Check::Ok
        );
        assert_eq!(
            check(&req(cmd::BLOCK_STATUS, cflag::REQ_ONE, 0, 1), &l),
            Check::Ok
        );
        // Oversized payloads.
        assert!(matches!(
            check(&req(cmd::WRITE, 0, 0, MAX_PAYLOAD + 1), &l),
            Check::ErrorThenDisconnect(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(cmd::READ, 0, 0, MAX_PAYLOAD + 1), &l),
            Check::Error(err::EINVAL, _)
        ));
        // Trims and zeroes may be larger than a payload.
        let big = Limits { size: 1 << 40, ..l };
        assert_eq!(check(&req(cmd::TRIM, 0, 0, u32::MAX), &big), Check::Ok);
        assert_eq!(
            check(&req(cmd::WRITE_ZEROES, 0, 0, u32::MAX), &big),
            Check::Ok
        );
    }

    #[test]
    fn read_only_and_negotiation_dependent_rules() {
        let ro = Limits {
            read_only: true,
            ..lim()
        };
        for t in [cmd::WRITE, cmd::WRITE_ZEROES, cmd::TRIM] {
            assert!(matches!(
                check(&req(t, 0, 0, 1), &ro),
                Check::Error(err::EPERM, _)
            ));
        }
        assert_eq!(check(&req(cmd::READ, 0, 0, 1), &ro), Check::Ok);
        let simple = Limits {
            structured: false,
            meta: false,
            ..lim()
        };
        assert!(matches!(
            check(&req(cmd::READ, cflag::DF, 0, 1), &simple),
            Check::Error(err::EINVAL, _)
        ));
        assert!(matches!(
            check(&req(cmd::BLOCK_STATUS, 0, 0, 1), &simple),
            Check::Error(err::EINVAL, _)
        ));
    }

    #[test]
    fn reply_encodings() {
        let s = simple_reply(err::EINVAL, 0x0102_0304_0506_0708);
        assert_eq!(be32(&s[0..]), SIMPLE_REPLY_MAGIC);
        assert_eq!(be32(&s[4..]), 22);
        assert_eq!(be64(&s[8..]), 0x0102_0304_0506_0708);
        let d = offset_data_header(9, 4096, 512);
        assert_eq!(be32(&d[0..]), STRUCTURED_REPLY_MAGIC);
        assert_eq!(be16(&d[4..]), reply::FLAG_DONE);
        assert_eq!(be16(&d[6..]), reply::TYPE_OFFSET_DATA);
        assert_eq!(be32(&d[16..]), 520);
        assert_eq!(be64(&d[20..]), 4096);
        let e = error_chunk(9, err::EPERM, "no");
        assert_eq!(be32(&e[16..]), 8);
        assert_eq!(be32(&e[20..]), 1);
        assert_eq!(be16(&e[24..]), 2);
        assert_eq!(&e[26..], b"no");
        let bs = block_status_chunk(
            9,
            1,
            &[Extent {
                length: 4096,
                flags: STATE_HOLE | STATE_ZERO,
            }],
        );
        assert_eq!(be32(&bs[16..]), 12);
        assert_eq!(be32(&bs[20..]), 1);
        assert_eq!(be32(&bs[24..]), 4096);
        assert_eq!(be32(&bs[28..]), 3);
    }

    #[test]
    fn error_mapping() {
        let e = |n| errno_to_nbd(&std::io::Error::from_raw_os_error(n));
        assert_eq!(e(libc::EDQUOT), err::ENOSPC);
        assert_eq!(e(libc::EFBIG), err::ENOSPC);
        assert_eq!(e(libc::EROFS), err::EPERM);
        assert_eq!(e(libc::EOPNOTSUPP), err::ENOTSUP);
        assert_eq!(e(libc::EBADF), err::EIO);
        assert_eq!(e(libc::EIO), err::EIO);
        assert_eq!(e(libc::ENOSPC), err::ENOSPC);
        assert_eq!(e(libc::EACCES), err::EPERM);
        assert_eq!(e(libc::ENOMEM), err::ENOMEM);
        assert_eq!(e(libc::ESHUTDOWN), err::ESHUTDOWN);
    }

    #[test]
    fn reply_errors_stay_within_the_spec() {
        let io = std::io::Error::from_raw_os_error;
        let r = |typ, flags, n| reply_error(&req(typ, flags, 0, 4096), &io(n));
        assert_eq!(r(cmd::READ, 0, libc::EOVERFLOW), err::EINVAL);
        assert_eq!(r(cmd::TRIM, 0, libc::EOPNOTSUPP), err::EINVAL);
        assert_eq!(r(cmd::WRITE_ZEROES, 0, libc::EOPNOTSUPP), err::EINVAL);
        assert_eq!(
            r(cmd::WRITE_ZEROES, cflag::FAST_ZERO, libc::EOPNOTSUPP),
            err::ENOTSUP
        );
        let unsupported = std::io::Error::new(std::io::ErrorKind::Unsupported, "no");
        let fast = req(cmd::WRITE_ZEROES, cflag::FAST_ZERO | cflag::NO_HOLE, 0, 1);
        assert_eq!(reply_error(&fast, &unsupported), err::ENOTSUP);
        assert_eq!(r(cmd::WRITE, cflag::FUA, libc::EDQUOT), err::ENOSPC);
        assert_eq!(r(cmd::FLUSH, 0, libc::EIO), err::EIO);
        assert_eq!(r(cmd::WRITE, 0, libc::EROFS), err::EPERM);
        assert_eq!(r(cmd::READ, 0, libc::ESHUTDOWN), err::EIO);
    }
}

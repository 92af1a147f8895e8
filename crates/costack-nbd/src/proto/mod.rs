//! The NBD wire protocol: constants, message layouts and pure encoders/decoders.
//!
//! Nothing here does I/O. The handshake ([`handshake`](crate::handshake)) and the transmission
//! phase ([`server`](crate::server)) read bytes from the socket and hand them to these
//! functions, so every rule about *what the bytes mean* can be unit-tested without a network.
//! Names follow the protocol specification (`doc/proto.md` of the NBD project), minus the
//! `NBD_` prefix. All integers on the wire are big-endian.
//!
//! # The two phases in one picture
//!
//! ```text
//! S: "NBDMAGIC" "IHAVEOPT" handshake-flags(16)     C: client-flags(32)
//! C: "IHAVEOPT" option(32) length(32) data...      S: REPLY_MAGIC option(32) type(32) length(32) data...
//!    ... more options, until GO is acked or EXPORT_NAME is sent ...
//! C: REQUEST_MAGIC flags(16) type(16) cookie(64) offset(64) length(32) [payload for WRITE]
//! S: SIMPLE_REPLY_MAGIC error(32) cookie(64) [data for READ]                  (simple reply)
//! S: STRUCTURED_REPLY_MAGIC flags(16) type(16) cookie(64) length(32) payload  (structured chunk)
//! ```

/// `NBDMAGIC`: the first eight bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, sent by the server after `NBDMAGIC` and by the client before
/// every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags (16 bits, after the handshake).
pub mod tflag {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// The export behaves like a rotational disk.
    pub const ROTATIONAL: u16 = 1 << 4;
    /// `CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `CMD_WRITE_ZEROES` (and `CMD_FLAG_NO_HOLE`) is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `CMD_FLAG_DF` is supported on reads (only with structured replies).
    pub const SEND_DF: u16 = 1 << 7;
    /// Flush and FUA are visible across all connections.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `CMD_CACHE` is supported.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `CMD_FLAG_FAST_ZERO` is supported on write-zeroes.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Option codes (handshake phase).
pub mod opt {
    /// Choose an export and enter transmission (no error possible).
    pub const EXPORT_NAME: u32 = 1;
    /// End the negotiation.
    pub const ABORT: u32 = 2;
    /// List the exports.
    pub const LIST: u32 = 3;
    /// Withdrawn experimental option.
    pub const PEEK_EXPORT: u32 = 4;
    /// Upgrade to TLS.
    pub const STARTTLS: u32 = 5;
    /// Details about an export.
    pub const INFO: u32 = 6;
    /// Details about an export, then enter transmission.
    pub const GO: u32 = 7;
    /// Use structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// List metadata contexts.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Select metadata contexts.
    pub const SET_META_CONTEXT: u32 = 10;
    /// The experimental extended headers (64-bit lengths).
    pub const EXTENDED_HEADERS: u32 = 11;

    /// The option's name, for messages.
    pub fn name(o: u32) -> &'static str {
        match o {
            EXPORT_NAME => "EXPORT_NAME",
            ABORT => "ABORT",
            LIST => "LIST",
            PEEK_EXPORT => "PEEK_EXPORT",
            STARTTLS => "STARTTLS",
            INFO => "INFO",
            GO => "GO",
            STRUCTURED_REPLY => "STRUCTURED_REPLY",
            LIST_META_CONTEXT => "LIST_META_CONTEXT",
            SET_META_CONTEXT => "SET_META_CONTEXT",
            EXTENDED_HEADERS => "EXTENDED_HEADERS",
            _ => "unknown",
        }
    }
}

/// Option reply types.
pub mod rep {
    /// Success, or the end of a list.
    pub const ACK: u32 = 1;
    /// One export in a `LIST` reply.
    pub const SERVER: u32 = 2;
    /// One item of information in an `INFO`/`GO` reply.
    pub const INFO: u32 = 3;
    /// One metadata context.
    pub const META_CONTEXT: u32 = 4;
    /// Bit 31 marks errors.
    pub const ERR_BIT: u32 = 1 << 31;
    /// Unknown or unsupported option.
    pub const ERR_UNSUP: u32 = ERR_BIT + 1;
    /// Forbidden by policy.
    pub const ERR_POLICY: u32 = ERR_BIT + 2;
    /// Syntactically or semantically invalid.
    pub const ERR_INVALID: u32 = ERR_BIT + 3;
    /// Not supported on this platform.
    pub const ERR_PLATFORM: u32 = ERR_BIT + 4;
    /// TLS required first.
    pub const ERR_TLS_REQD: u32 = ERR_BIT + 5;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = ERR_BIT + 6;
    /// The server is shutting down.
    pub const ERR_SHUTDOWN: u32 = ERR_BIT + 7;
    /// Block size constraints must be requested first.
    pub const ERR_BLOCK_SIZE_REQD: u32 = ERR_BIT + 8;
    /// The request or reply is too large.
    pub const ERR_TOO_BIG: u32 = ERR_BIT + 9;
}

/// Information types inside `REP_INFO`.
pub mod info {
    /// Size and transmission flags (mandatory).
    pub const EXPORT: u16 = 0;
    /// Canonical export name.
    pub const NAME: u16 = 1;
    /// Human-readable description.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

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

/// The one metadata context this server offers.
pub const META_BASE_ALLOCATION: &str = "base:allocation";

/// Minimum block size advertised: any byte is addressable.
pub const MIN_BLOCK: u32 = 1;
/// Preferred block size advertised.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Maximum payload advertised, and the largest READ or WRITE this server accepts (32 MiB).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;

/// Strings (export names, queries) longer than this are refused, as the spec allows.
pub const MAX_STRING: usize = 4096;

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

/// Checks a request against the spec's rules, in this order: unknown command, unknown or
/// misplaced flag, oversized payload, read-only export, range past the end.
///
/// * unknown commands, and flags not documented for the command: `EINVAL`;
/// * `READ` or `WRITE` over [`MAX_PAYLOAD`]: `EINVAL` (a `WRITE` also disconnects, since its
///   payload is not read);
/// * `WRITE`, `WRITE_ZEROES`, `TRIM` on a read-only export: `EPERM`;
/// * past the end of the export: `ENOSPC` for `WRITE` and `WRITE_ZEROES`, `EINVAL` for `READ`,
///   `TRIM`, `CACHE` and `BLOCK_STATUS`;
/// * `BLOCK_STATUS` without a selected metadata context, or of zero bytes: `EINVAL`.
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

/// Encodes an option reply header (the payload of `len` bytes follows).
pub fn opt_reply_header(option: u32, typ: u32, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..8].copy_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    b[8..12].copy_from_slice(&option.to_be_bytes());
    b[12..16].copy_from_slice(&typ.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// A cursor over option data that fails (with `None`) instead of reading past the end, so a
/// length field that lies cannot make the parser read beyond the option.
#[derive(Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data, pos: 0 }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(be16)
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(be32)
    }

    /// A string prefixed by its 32-bit length: must be at most [`MAX_STRING`] bytes of UTF-8
    /// without NUL.
    pub fn string32(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return None;
        }
        let s = std::str::from_utf8(self.bytes(n)?).ok()?;
        (!s.contains('\0')).then_some(s)
    }

    /// Whether every byte was consumed.
    pub fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }
}

/// The body of an `INFO` or `GO` option.
#[derive(Debug, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// The export name (empty: the default export).
    pub name: &'a str,
    /// The information types requested.
    pub requests: Vec<u16>,
}

/// Parses an `INFO`/`GO` body; `None` if it is malformed (lengths that do not add up to the
/// option length, a bad string).
pub fn parse_info(data: &[u8]) -> Option<InfoRequest<'_>> {
    let mut c = Cursor::new(data);
    let name = c.string32()?;
    let n = c.u16()?;
    let mut requests = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        requests.push(c.u16()?);
    }
    c.at_end().then_some(InfoRequest { name, requests })
}

/// The body of a `LIST_META_CONTEXT` or `SET_META_CONTEXT` option.
#[derive(Debug, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    /// The export name.
    pub name: &'a str,
    /// The queries, each `namespace:leaf`.
    pub queries: Vec<&'a str>,
}

/// Parses a meta-context option body; `None` if it is malformed.
pub fn parse_meta(data: &[u8]) -> Option<MetaRequest<'_>> {
    let mut c = Cursor::new(data);
    let name = c.string32()?;
    let n = c.u32()?;
    let mut queries = Vec::new();
    for _ in 0..n {
        queries.push(c.string32()?);
    }
    c.at_end().then_some(MetaRequest { name, queries })
}

/// What a metadata query selects.
#[derive(Debug, PartialEq, Eq)]
pub enum MetaMatch {
    /// `base:allocation`.
    BaseAllocation,
    /// The `base:` wildcard: every `base` context when listing, nothing when setting.
    BaseWildcard,
    /// A context this server does not know (ignored, as the spec requires).
    Unknown,
    /// Not `namespace:leaf` at all.
    Invalid,
}

/// Classifies a metadata query.
pub fn meta_match(query: &str) -> MetaMatch {
    match query.split_once(':') {
        None => MetaMatch::Invalid,
        Some(("", _)) => MetaMatch::Invalid,
        Some(("base", "")) => MetaMatch::BaseWildcard,
        Some(("base", "allocation")) => MetaMatch::BaseAllocation,
        Some(_) => MetaMatch::Unknown,
    }
}

/// Reads a big-endian u16 from the first two bytes.
pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Reads a big-endian u32 from the first four bytes.
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads a big-endian u64 from the first eight bytes.
pub fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
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
    fn option_bodies() {
        let mut b = Vec::new();
        b.extend_from_slice(&4u32.to_be_bytes());
        b.extend_from_slice(b"disk");
        b.extend_from_slice(&2u16.to_be_bytes());
        b.extend_from_slice(&info::NAME.to_be_bytes());
        b.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            parse_info(&b),
            Some(InfoRequest {
                name: "disk",
                requests: vec![info::NAME, info::BLOCK_SIZE]
            })
        );
        // Trailing garbage, a short list and a lying name length are all refused.
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(parse_info(&extra), None);
        assert_eq!(parse_info(&b[..b.len() - 1]), None);
        let mut lie = b.clone();
        lie[3] = 200;
        assert_eq!(parse_info(&lie), None);

        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&2u32.to_be_bytes());
        for q in ["base:allocation", "qemu:dirty-bitmap:x"] {
            m.extend_from_slice(&(q.len() as u32).to_be_bytes());
            m.extend_from_slice(q.as_bytes());
        }
        let p = parse_meta(&m).unwrap();
        assert_eq!(p.name, "");
        assert_eq!(p.queries, ["base:allocation", "qemu:dirty-bitmap:x"]);
        assert_eq!(parse_meta(&m[..m.len() - 2]), None);
        let mut nul = m.clone();
        let at = nul.len() - 1;
        nul[at] = 0;
        assert_eq!(parse_meta(&nul), None);
    }

    #[test]
    fn meta_queries() {
        assert_eq!(meta_match("base:allocation"), MetaMatch::BaseAllocation);
        assert_eq!(meta_match("base:"), MetaMatch::BaseWildcard);
        assert_eq!(meta_match("base:other"), MetaMatch::Unknown);
        assert_eq!(meta_match("qemu:dirty-bitmap:a"), MetaMatch::Unknown);
        assert_eq!(meta_match("nocolon"), MetaMatch::Invalid);
        assert_eq!(meta_match(":leaf"), MetaMatch::Invalid);
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
    }
}

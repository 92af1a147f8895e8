//! The handshake phase on the wire: the greeting, option headers, option replies and their
//! payloads (`INFO`, `SERVER`, `META_CONTEXT`, the `EXPORT_NAME` reply), and the parsers of
//! option data.
//!
//! Every byte the server sends before transmission is built here; the negotiation itself
//! (which option gets which answer) is [`handshake`](crate::handshake)'s.
//!
//! May import: the sibling `basics` only.

use super::basics::{be16, be32, be64, MAX_STRING};

/// `NBDMAGIC`: the first eight bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, sent by the server after `NBDMAGIC` and by the client before
/// every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

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

/// The one metadata context this server offers.
pub const META_BASE_ALLOCATION: &str = "base:allocation";

/// Size of the server's greeting.
pub const GREETING_LEN: usize = 18;

/// The server's greeting, the first bytes of every session: `NBDMAGIC`, `IHAVEOPT` and the
/// handshake flags.
pub fn greeting(flags: u16) -> [u8; GREETING_LEN] {
    let mut b = [0u8; GREETING_LEN];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&flags.to_be_bytes());
    b
}

/// Size of an option header from the client (`IHAVEOPT`, option, data length).
pub const OPTION_HEADER_LEN: usize = 16;

/// An option header from the client, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option (`opt`).
    pub option: u32,
    /// Length of the option data that follows.
    pub length: u32,
}

impl OptionHeader {
    /// Decodes a 16-byte option header; `None` if it does not start with `IHAVEOPT` (the
    /// session must then end: nothing after it can be parsed).
    pub fn decode(b: &[u8; OPTION_HEADER_LEN]) -> Option<OptionHeader> {
        if be64(&b[0..8]) != IHAVEOPT {
            return None;
        }
        Some(OptionHeader {
            option: be32(&b[8..12]),
            length: be32(&b[12..16]),
        })
    }
}

/// A whole option reply: the header ([`opt_reply_header`]) followed by `data`.
pub fn opt_reply(option: u32, typ: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&opt_reply_header(option, typ, data.len() as u32));
    b.extend_from_slice(data);
    b
}

/// The data of the `INFO` reply `EXPORT`: the export's size and transmission flags.
pub fn info_export(size: u64, flags: u16) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..2].copy_from_slice(&info::EXPORT.to_be_bytes());
    b[2..10].copy_from_slice(&size.to_be_bytes());
    b[10..12].copy_from_slice(&flags.to_be_bytes());
    b
}

/// The data of the `INFO` reply `BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> [u8; 14] {
    let mut b = [0u8; 14];
    b[0..2].copy_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    b[2..6].copy_from_slice(&min.to_be_bytes());
    b[6..10].copy_from_slice(&preferred.to_be_bytes());
    b[10..14].copy_from_slice(&max.to_be_bytes());
    b
}

/// The data of an `INFO` reply that carries text (`NAME`, `DESCRIPTION`): the information
/// type, then the text, whose length is the reply's.
pub fn info_text(typ: u16, text: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + text.len());
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(text.as_bytes());
    b
}

/// The data of a `SERVER` reply to `LIST`: the export's name (with its length), then its
/// description.
pub fn server_entry(name: &str, description: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len() + description.len());
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(description.as_bytes());
    b
}

/// The data of a `META_CONTEXT` reply: the context's id, then its name.
pub fn meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

/// The server's answer to `EXPORT_NAME`, which ends the handshake: the export's size, the
/// transmission flags, and 124 zero bytes unless the client asked for none
/// (`FLAG_C_NO_ZEROES`).
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        b.extend_from_slice(&[0u8; 124]);
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
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`.
    fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data, pos: 0 }
    }

    /// The next `n` bytes.
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A big-endian u16.
    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(be16)
    }

    /// A big-endian u32.
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(be32)
    }

    /// A string prefixed by its 32-bit length: must be at most [`MAX_STRING`] bytes of UTF-8
    /// without NUL.
    fn string32(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return None;
        }
        let s = std::str::from_utf8(self.bytes(n)?).ok()?;
        (!s.contains('\0')).then_some(s)
    }

    /// Whether every byte was consumed.
    fn at_end(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn handshake_encodings() {
        let g = greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(be64(&g[0..]), NBDMAGIC);
        assert_eq!(be64(&g[8..]), IHAVEOPT);
        assert_eq!(be16(&g[16..]), 3);
        let mut h = [0u8; OPTION_HEADER_LEN];
        h[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        h[8..12].copy_from_slice(&opt::GO.to_be_bytes());
        h[12..16].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            OptionHeader::decode(&h),
            Some(OptionHeader {
                option: opt::GO,
                length: 7
            })
        );
        h[0] ^= 1;
        assert_eq!(OptionHeader::decode(&h), None);
        let r = opt_reply(opt::INFO, rep::INFO, b"xy");
        assert_eq!(be64(&r[0..]), OPT_REPLY_MAGIC);
        assert_eq!(be32(&r[8..]), opt::INFO);
        assert_eq!(be32(&r[12..]), rep::INFO);
        assert_eq!(be32(&r[16..]), 2);
        assert_eq!(&r[20..], b"xy");
        let e = info_export(1 << 40, 0x1234);
        assert_eq!(be16(&e[0..]), info::EXPORT);
        assert_eq!(be64(&e[2..]), 1 << 40);
        assert_eq!(be16(&e[10..]), 0x1234);
        let bs = info_block_size(1, 4096, 1 << 25);
        assert_eq!(be16(&bs[0..]), info::BLOCK_SIZE);
        assert_eq!(
            (be32(&bs[2..]), be32(&bs[6..]), be32(&bs[10..])),
            (1, 4096, 1 << 25)
        );
        assert_eq!(info_text(info::NAME, "d"), [0, 1, b'd']);
        assert_eq!(server_entry("ab", "c"), [0, 0, 0, 2, b'a', b'b', b'c']);
        assert_eq!(meta_context(1, "m"), [0, 0, 0, 1, b'm']);
        let x = export_name_reply(512, 3, false);
        assert_eq!(x.len(), 134);
        assert_eq!(be64(&x[0..]), 512);
        assert_eq!(be16(&x[8..]), 3);
        assert!(x[10..].iter().all(|&b| b == 0));
        assert_eq!(export_name_reply(512, 3, true).len(), 10);
    }
}

//! The handshake: fixed newstyle negotiation, option by option, until the client picks the
//! export (`GO` or `EXPORT_NAME`) or leaves.
//!
//! It runs in the connection's coroutine and reads like the spec: greet, read the client's
//! flags, then loop — read an option header, read its data, answer. Each read or write yields
//! the coroutine while the socket is not ready, so a slow or silent client costs nothing but
//! its stack.
//!
//! This file holds the negotiation (which option gets which answer, what is remembered for
//! transmission) and the socket reads and writes; every byte it sends is encoded by
//! [`proto`], so the two can be read, and tested, apart. Its public items are the
//! limits and ids a client meets; the negotiation itself is run by the server, not by users.
//!
//! May import: [`proto`], [`export`](crate::export) (the [`Export`] it describes) and
//! [`transport`](crate::transport) (the stream, and TLS). The server imports it; it imports
//! nothing of the server.
//!
//! # What is answered how
//!
//! | option | answer |
//! |---|---|
//! | `EXPORT_NAME` | size, flags (and 124 zeroes unless `NO_ZEROES`); an unknown name ends the session |
//! | `ABORT` | `ACK`, then close |
//! | `LIST` | one `SERVER` (name and description), `ACK`; with data: `ERR_INVALID` |
//! | `INFO` / `GO` | `INFO`s: `EXPORT`, `BLOCK_SIZE` (1 / 4096 / 32 MiB), and `NAME` / `DESCRIPTION` when asked; `ACK`. Unknown export: `ERR_UNKNOWN`; malformed: `ERR_INVALID` |
//! | `STRUCTURED_REPLY` | `ACK`; with data or repeated: `ERR_INVALID` |
//! | `LIST_META_CONTEXT` / `SET_META_CONTEXT` | `base:allocation` (id 0 when listing, [`META_ID`] when set), `ACK`; before `STRUCTURED_REPLY`: `ERR_INVALID` |
//! | `STARTTLS` | TLS off: `ERR_UNSUP` (the spec's NOTLS mode). TLS on or required: `ACK`, then the TLS handshake; negotiation state (structured replies, metadata contexts) is forgotten. With data, or TLS already up: `ERR_INVALID` |
//! | `EXTENDED_HEADERS`, anything else | `ERR_UNSUP` |
//!
//! With TLS required ([`TlsMode::Require`], the spec's FORCEDTLS), until TLS is up every option
//! but `STARTTLS` and `ABORT` gets `ERR_TLS_REQD` (after its data is read), and `EXPORT_NAME`,
//! which cannot be refused, ends the session. With TLS on ([`TlsMode::On`]) plaintext clients
//! are served as with TLS off; `STARTTLS` is there for those who want it.
//!
//! Every option's data is read in full before it is answered (or skipped, if it is not
//! wanted), so the next option header is always parsed from the right place. Option data over
//! [`MAX_OPTION_DATA`] is skipped without being stored and refused with `ERR_TOO_BIG`; over
//! [`MAX_OPTION_SKIP`] the server hangs up, as the spec allows against denial of service.

use crate::export::Export;
use crate::proto::{self, info, opt, rep, tflag, MetaMatch, OptionHeader};
use crate::transport::{StartTls, TlsMode};
use std::io::{self, Read, Write};

/// The metadata context id given to `base:allocation` by `SET_META_CONTEXT`.
pub const META_ID: u32 = 1;
/// The most option data this server stores for one option (64 KiB).
pub const MAX_OPTION_DATA: u32 = 64 * 1024;
/// The most option data this server reads and throws away before it hangs up (32 MiB).
pub const MAX_OPTION_SKIP: u32 = 32 * 1024 * 1024;

/// What the handshake agreed on, for the transmission phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negotiated {
    /// Structured replies are on.
    pub(crate) structured: bool,
    /// The id of `base:allocation` if it was selected for this export.
    pub(crate) meta: Option<u32>,
}

/// The transmission flags for `export`, given whether structured replies are on.
pub(crate) fn transmission_flags(export: &Export, structured: bool) -> u16 {
    let mut f = tflag::HAS_FLAGS
        | tflag::SEND_FLUSH
        | tflag::SEND_FUA
        | tflag::SEND_CACHE
        | tflag::CAN_MULTI_CONN;
    if export.read_only {
        f |= tflag::READ_ONLY;
    } else {
        f |= tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES | tflag::SEND_FAST_ZERO;
    }
    if structured {
        f |= tflag::SEND_DF;
    }
    f
}

struct State<'a, S> {
    io: &'a S,
    export: &'a Export,
    structured: bool,
    /// `SET_META_CONTEXT` selected `base:allocation` for our export.
    meta: bool,
}

fn write_all<S>(io: &S, b: &[u8]) -> io::Result<()>
where
    for<'x> &'x S: Write,
{
    let mut w = io;
    w.write_all(b)
}

fn read_exact<S>(io: &S, b: &mut [u8]) -> io::Result<()>
where
    for<'x> &'x S: Read,
{
    let mut r = io;
    r.read_exact(b)
}

impl<S> State<'_, S>
where
    for<'x> &'x S: Read + Write,
{
    fn reply(&self, option: u32, typ: u32, data: &[u8]) -> io::Result<()> {
        write_all(self.io, &proto::opt_reply(option, typ, data))
    }

    fn ack(&self, option: u32) -> io::Result<()> {
        self.reply(option, rep::ACK, &[])
    }

    fn error(&self, option: u32, typ: u32, msg: &str) -> io::Result<()> {
        self.reply(option, typ, msg.as_bytes())
    }

    /// Sends the `INFO` replies for our export, then `ACK`.
    fn info_replies(&self, option: u32, requests: &[u16]) -> io::Result<()> {
        let e = self.export;
        let flags = transmission_flags(e, self.structured);
        self.reply(option, rep::INFO, &proto::info_export(e.size(), flags))?;
        let sizes =
            proto::info_block_size(proto::MIN_BLOCK, proto::PREFERRED_BLOCK, proto::MAX_PAYLOAD);
        self.reply(option, rep::INFO, &sizes)?;
        if requests.contains(&info::NAME) {
            self.reply(option, rep::INFO, &proto::info_text(info::NAME, &e.name))?;
        }
        if requests.contains(&info::DESCRIPTION) {
            let text = proto::info_text(info::DESCRIPTION, &e.description);
            self.reply(option, rep::INFO, &text)?;
        }
        self.ack(option)
    }

    fn meta_context_reply(&self, option: u32, id: u32) -> io::Result<()> {
        let data = proto::meta_context(id, proto::META_BASE_ALLOCATION);
        self.reply(option, rep::META_CONTEXT, &data)
    }

    /// `LIST_META_CONTEXT` and `SET_META_CONTEXT`.
    fn meta_context(&mut self, option: u32, data: &[u8]) -> io::Result<()> {
        let set = option == opt::SET_META_CONTEXT;
        if set {
            // Replaces the selection, even when it fails.
            self.meta = false;
        }
        if !self.structured {
            return self.error(
                option,
                rep::ERR_INVALID,
                "negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts",
            );
        }
        let Some(req) = proto::parse_meta(data) else {
            return self.error(
                option,
                rep::ERR_INVALID,
                "malformed metadata context request",
            );
        };
        if !self.export.matches(req.name) {
            return self.error(option, rep::ERR_UNKNOWN, "no such export");
        }
        let mut selected = false;
        if req.queries.is_empty() {
            // Listing with no query lists everything; setting with none selects nothing.
            selected = !set;
        }
        for q in &req.queries {
            match proto::meta_match(q) {
                MetaMatch::BaseAllocation => selected = true,
                MetaMatch::BaseWildcard => selected |= !set,
                MetaMatch::Unknown => {}
                MetaMatch::Invalid => {
                    return self.error(
                        option,
                        rep::ERR_INVALID,
                        "a metadata query must be namespace:leaf",
                    );
                }
            }
        }
        if selected {
            self.meta_context_reply(option, if set { META_ID } else { 0 })?;
            self.meta = set;
        }
        self.ack(option)
    }

    /// Reads and throws away `len` bytes of option data.
    fn skip(&self, len: u32) -> io::Result<()> {
        let mut r = self.io;
        let n = io::copy(&mut Read::take(&mut r, u64::from(len)), &mut io::sink())?;
        if n != u64::from(len) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Runs the handshake on a fresh connection. Returns what was negotiated when the client
/// enters transmission, or `None` when the session ends during the handshake (the client
/// aborted or hung up, or broke a rule that leaves no way to answer).
///
/// # Errors
/// I/O errors of the socket.
pub(crate) fn handshake<S: StartTls>(
    io: &S,
    export: &Export,
    tls: &TlsMode,
) -> io::Result<Option<Negotiated>>
where
    for<'x> &'x S: Read + Write,
{
    let hello = proto::greeting(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES);
    write_all(io, &hello)?;
    let mut cf = [0u8; 4];
    read_exact(io, &mut cf)?;
    let client_flags = proto::be32(&cf);
    if client_flags & !(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES) != 0 {
        // "the server MUST drop the TCP connection if the client sets an unknown flag"
        return Ok(None);
    }
    let no_zeroes = client_flags & proto::FLAG_C_NO_ZEROES != 0;
    let mut st = State {
        io,
        export,
        structured: false,
        meta: false,
    };
    loop {
        let mut h = [0u8; proto::OPTION_HEADER_LEN];
        read_exact(io, &mut h)?;
        let Some(OptionHeader {
            option,
            length: len,
        }) = OptionHeader::decode(&h)
        else {
            return Ok(None); // not an option: nothing else can be parsed
        };
        // FORCEDTLS: nothing but STARTTLS and ABORT until TLS is up.
        let tls_reqd =
            tls.is_required() && !io.is_tls() && option != opt::STARTTLS && option != opt::ABORT;
        if tls_reqd && option == opt::EXPORT_NAME {
            return Ok(None); // cannot be refused: end the session
        }
        if len > MAX_OPTION_DATA {
            if option == opt::EXPORT_NAME || len > MAX_OPTION_SKIP {
                return Ok(None);
            }
            st.skip(len)?;
            let typ = if tls_reqd {
                rep::ERR_TLS_REQD
            } else if is_known(option) {
                rep::ERR_TOO_BIG
            } else {
                rep::ERR_UNSUP
            };
            st.error(option, typ, "option data too large")?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        read_exact(io, &mut data)?;
        if tls_reqd {
            st.error(
                option,
                rep::ERR_TLS_REQD,
                "TLS is required: send NBD_OPT_STARTTLS first",
            )?;
            continue;
        }
        match option {
            opt::EXPORT_NAME => {
                let name = std::str::from_utf8(&data).unwrap_or("\u{0}");
                if name.len() > proto::MAX_STRING || !export.matches(name) {
                    return Ok(None); // cannot answer with an error: end the session
                }
                let flags = transmission_flags(export, st.structured);
                write_all(
                    io,
                    &proto::export_name_reply(export.size(), flags, no_zeroes),
                )?;
                return Ok(Some(Negotiated {
                    structured: st.structured,
                    meta: st.meta.then_some(META_ID),
                }));
            }
            opt::ABORT => {
                // The client may already be gone: a failed ACK is no error.
                let _ = st.ack(option);
                return Ok(None);
            }
            opt::LIST => {
                if !data.is_empty() {
                    st.error(option, rep::ERR_INVALID, "LIST takes no data")?;
                    continue;
                }
                let entry = proto::server_entry(&export.name, &export.description);
                st.reply(option, rep::SERVER, &entry)?;
                st.ack(option)?;
            }
            opt::INFO | opt::GO => {
                let Some(req) = proto::parse_info(&data) else {
                    st.error(option, rep::ERR_INVALID, "malformed INFO/GO request")?;
                    continue;
                };
                if !export.matches(req.name) {
                    st.error(option, rep::ERR_UNKNOWN, "no such export")?;
                    continue;
                }
                st.info_replies(option, &req.requests)?;
                if option == opt::GO {
                    return Ok(Some(Negotiated {
                        structured: st.structured,
                        meta: st.meta.then_some(META_ID),
                    }));
                }
            }
            opt::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    st.error(option, rep::ERR_INVALID, "STRUCTURED_REPLY takes no data")?;
                } else if st.structured {
                    st.error(
                        option,
                        rep::ERR_INVALID,
                        "structured replies already negotiated",
                    )?;
                } else {
                    st.structured = true;
                    st.ack(option)?;
                }
            }
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => st.meta_context(option, &data)?,
            opt::STARTTLS => match tls.credentials() {
                _ if !data.is_empty() => {
                    st.error(option, rep::ERR_INVALID, "STARTTLS takes no data")?;
                }
                None => st.error(option, rep::ERR_UNSUP, "this server does not support TLS")?,
                Some(_) if io.is_tls() => {
                    st.error(option, rep::ERR_INVALID, "TLS is already on")?;
                }
                Some(creds) => {
                    st.ack(option)?;
                    io.start_tls(creds)?;
                    // "the server MUST NOT preserve any negotiation state"
                    st.structured = false;
                    st.meta = false;
                }
            },
            _ => st.error(
                option,
                rep::ERR_UNSUP,
                &format!("option {option} ({}) is not supported", opt::name(option)),
            )?,
        }
    }
}

fn is_known(option: u32) -> bool {
    matches!(
        option,
        opt::EXPORT_NAME
            | opt::ABORT
            | opt::LIST
            | opt::STARTTLS
            | opt::INFO
            | opt::GO
            | opt::STRUCTURED_REPLY
            | opt::LIST_META_CONTEXT
            | opt::SET_META_CONTEXT
    )
}

//! The NBD wire protocol: constants, message layouts and pure encoders/decoders.
//!
//! Nothing here does I/O, and every byte the server sends is encoded here. The handshake ([`handshake`](crate::handshake)) and the transmission
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
//!
//! # Where what is
//!
//! * the handshake's bytes (greeting, option headers, option replies and their payloads,
//!   option-data parsers) and its constants (`opt`, `rep`, `info`, `tflag`);
//! * the transmission's bytes (request headers, [`check`], simple replies and structured
//!   chunks) and its constants (`cmd`, `cflag`, `reply`, `err`);
//! * what both share: big-endian readers ([`be16`], [`be32`], [`be64`]) and the sizes this
//!   server advertises and enforces ([`MAX_PAYLOAD`], [`MAX_STRING`]).
//!
//! All of it is public and usable on its own, by a client as well as by a server: the tests
//! of this crate build their NBD client from it. The files behind it (`basics`, `handshake`,
//! `transmission`) are private; every item is reached as `proto::NAME`.
//!
//! May import: nothing of the crate (the ground floor).

mod basics;
mod handshake;
mod transmission;

pub use basics::*;
pub use handshake::*;
pub use transmission::*;

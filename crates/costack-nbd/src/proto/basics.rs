//! What both phases share: reading big-endian fields, and the sizes this server advertises
//! and enforces.
//!
//! The ground floor of [`proto`](super): it imports nothing of the crate, and both
//! `handshake` and `transmission` import it.

/// Minimum block size advertised: any byte is addressable.
pub const MIN_BLOCK: u32 = 1;
/// Preferred block size advertised.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Maximum payload advertised, and the largest READ or WRITE this server accepts (32 MiB).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;

/// Strings (export names, queries) longer than this are refused, as the spec allows.
pub const MAX_STRING: usize = 4096;

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

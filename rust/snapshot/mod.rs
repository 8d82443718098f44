//! The whole table as bytes, and back.
//!
//! Layout (little-endian): `MAGIC`, format version (u32), payload, XXH3-64 of all
//! that precedes it. The checksum and a strict reader reject anything `encode` did
//! not write: wrong magic, unknown version, truncation, flipped bits, trailing bytes.
//! The checksum only detects accidents, so the reader also validates every value as
//! the event parser would (ids, names, times in years 1..=9999, amounts within 64-bit
//! signed micro-units), and the table checks what the values add up to (consistent
//! counters and references): a snapshot whose checksum was recomputed after tampering
//! still restores only a table events could have built.
//!
//! The payload, in order: the table's header (`table::Header`) and the cursor,
//! plan names, rows, superseded subscriptions, holds, seen event ids, parked events and
//! their sequence number, the usage journal, the routing layers (local policies, then
//! replicated entries with their timestamps and tombstones) (`write` is the reference).
//!
//! Version 3 added the routing layers (older snapshots restore with none); version 2
//! added `max_parked_bytes` after `max_parked`; version 1 is still read (with the
//! default bound).

mod read;
mod write;

pub use read::decode;
pub use write::encode;

const MAGIC: &[u8; 8] = b"BGWSNAP\x00";
const VERSION: u32 = 3;
const CHECKSUM_LEN: usize = 8;

#[cfg(test)]
pub(crate) mod tests;

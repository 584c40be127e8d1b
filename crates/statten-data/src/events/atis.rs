//! The 40-bit ATIS event format of N-Caltech101 and N-MNIST (Orchard et al.).
//!
//! Five bytes per event, no header: `b0 = x`, `b1 = y`, `b2` bit 7 = polarity (1 = ON),
//! `t = ((b2 & 0x7F) << 16) | (b3 << 8) | b4` µs. As SpikingJelly's `load_ATIS_bin`, no
//! overflow-marker handling (tonic's `y == 240` convention) is applied.

use std::path::Path;

use super::Events;
use crate::error::{DataError, Result};

/// Parse 40-bit ATIS bytes; `path` names the file in errors.
pub fn parse_atis_bin(bytes: &[u8], path: &Path) -> Result<Events> {
    if !bytes.len().is_multiple_of(5) {
        return Err(DataError::new(
            path,
            format!(
                "{} bytes is not a multiple of the 5-byte ATIS event (truncated or corrupt file)",
                bytes.len()
            ),
        ));
    }
    let mut ev = Events::with_capacity(bytes.len() / 5);
    for e in bytes.chunks_exact(5) {
        let t = ((e[2] as u64 & 0x7F) << 16) | ((e[3] as u64) << 8) | e[4] as u64;
        ev.push(t, e[0] as u16, e[1] as u16, e[2] >> 7);
    }
    Ok(ev)
}

/// Read an N-Caltech101 / N-MNIST `.bin` file.
pub fn read_atis_bin(path: &Path) -> Result<Events> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    parse_atis_bin(&bytes, path)
}

/// Encode events in the 40-bit format (for tests and tools).
pub fn encode_atis_bin(events: &Events) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 5);
    for i in 0..events.len() {
        let t = events.t[i] as u32;
        out.push(events.x[i] as u8);
        out.push(events.y[i] as u8);
        out.push(((events.p[i] & 1) << 7) | ((t >> 16) & 0x7F) as u8);
        out.push((t >> 8) as u8);
        out.push(t as u8);
    }
    out
}

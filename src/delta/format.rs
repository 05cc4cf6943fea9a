//! The delta file's bytes: a fixed header, a postcard body (deflated when that is smaller), and
//! a sha256 over everything before it. `docs/FORMAT.md` is the byte-level description; this
//! file is its implementation.
//!
//! Reading checks, in order: length against the header, magic, version, flags, the checksum,
//! then decodes. Nothing is allocated from a length field before it has been checked against
//! the file's real size (compressed) or a fixed limit (decompressed).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::onnx::patch::TensorValues;

/// First 8 bytes of every delta file.
pub const MAGIC: [u8; 8] = *b"QFDELTA\0";
/// The newest format version this build reads (it reads every version from 1). A file is
/// written with the lowest version that holds its contents: 2 only when a tensor uses
/// [`Change::Grid`], so older builds reject such a file by its version, not by a decode error.
pub const VERSION: u16 = 2;
/// Header size: magic, version, flags, stored length, body length.
pub const HEADER_LEN: usize = 28;
/// Trailing checksum size.
pub const CHECKSUM_LEN: usize = 32;
/// Largest decoded body accepted (a corrupt or hostile length must not exhaust memory).
pub const MAX_BODY: u64 = 1 << 30;
/// Flag bit: the body is deflate-compressed.
pub const FLAG_DEFLATE: u16 = 1;

/// A sha256 digest.
pub type Hash = [u8; 32];

/// Lowercase hex of a digest.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of some bytes.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// How one initializer changes. Integer types store `new - old` (wrapping, so every change is
/// exact and mostly small); float tensors (scales) store the new values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// One entry per element.
    Dense(TensorValues),
    /// Changed elements only: `gaps[k]` = index − previous index − 1 (the first is the index),
    /// `values[k]` the element's difference or new value.
    Sparse {
        gaps: Vec<u32>,
        values: TensorValues,
    },
    /// int8/uint8 only: every element's wrapping difference, range-coded (see `rc.rs`);
    /// `changed` is the number of non-zero differences.
    Coded { changed: u64, bytes: Vec<u8> },
    /// 8/4-bit only, format version 2: the same differences seen as a `rows`-row matrix,
    /// range-coded with row and column flags first (see `rc_grid.rs`).
    Grid {
        rows: u64,
        changed: u64,
        bytes: Vec<u8>,
    },
}

/// The change of one initializer, keyed by its ONNX name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorDelta {
    pub name: String,
    /// Element count of the initializer (checked on apply).
    pub len: u64,
    pub change: Change,
}

/// Everything a delta says, in postcard field order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaBody {
    /// sha256 of the exact bytes of the base .onnx.
    pub base_sha256: Hash,
    /// Hash (checksum) of the parent delta; `None` for the first request over the base.
    pub parent: Option<Hash>,
    pub request_id: String,
    pub method: String,
    pub settings: BTreeMap<String, String>,
    /// Milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// sha256 fingerprint of the forgotten sample ids (see `journal::fingerprint`).
    pub forget_fingerprint: Hash,
    pub forget_count: u64,
    pub tensors: Vec<TensorDelta>,
}

/// Serialize a body into a complete delta file; returns (file bytes, delta hash).
pub fn encode(body: &DeltaBody) -> (Vec<u8>, Hash) {
    let plain = postcard::to_stdvec(body).expect("postcard encodes owned data to a Vec");
    let packed = deflate_columns(&plain, body).expect("deflate into a Vec");
    let (flags, stored) = if packed.len() < plain.len() {
        (FLAG_DEFLATE, packed)
    } else {
        (0, plain.clone())
    };
    let mut out = Vec::with_capacity(HEADER_LEN + stored.len() + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version_of(body).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
    out.extend_from_slice(&(plain.len() as u64).to_le_bytes());
    out.extend_from_slice(&stored);
    let h = sha256(&out);
    out.extend_from_slice(&h);
    (out, h)
}

/// The lowest format version that holds `body`.
pub fn version_of(body: &DeltaBody) -> u16 {
    if body
        .tensors
        .iter()
        .any(|t| matches!(t.change, Change::Grid { .. }))
    {
        2
    } else {
        1
    }
}

/// Deflate the postcard body, ending a deflate block (sync flush) wherever a column of
/// different statistics starts — each tensor, and between a sparse tensor's index gaps and its
/// values — so that each column gets its own Huffman tables. Postcard writes a struct as the
/// plain concatenation of its fields, so the column offsets follow from the pieces' sizes.
/// The output is an ordinary deflate stream; the reader needs to know none of this.
fn deflate_columns(plain: &[u8], body: &DeltaBody) -> std::io::Result<Vec<u8>> {
    let size = |v: postcard::Result<Vec<u8>>| v.map(|v| v.len()).unwrap_or(0);
    let mut cuts = Vec::new();
    let tensors_len: usize = body
        .tensors
        .iter()
        .map(|t| size(postcard::to_stdvec(t)))
        .sum();
    let mut at = plain.len() - tensors_len;
    for t in &body.tensors {
        cuts.push(at);
        if let Change::Sparse { gaps, .. } = &t.change {
            // name, len, the variant index (one byte), then the gaps.
            cuts.push(
                at + size(postcard::to_stdvec(&(&t.name, t.len)))
                    + 1
                    + size(postcard::to_stdvec(gaps)),
            );
        }
        at += size(postcard::to_stdvec(t));
    }
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let mut from = 0;
    for c in cuts {
        if c > from && c <= plain.len() {
            z.write_all(&plain[from..c])?;
            z.flush()?;
            from = c;
        }
    }
    z.write_all(&plain[from..])?;
    z.finish()
}

/// Check and decode a complete delta file; the error says what is wrong (without the path).
pub fn decode(bytes: &[u8]) -> Result<(DeltaBody, Hash), String> {
    if bytes.is_empty() {
        return Err("not a qforget delta: the file is empty".into());
    }
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        if !MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            return Err("not a qforget delta (wrong magic)".into());
        }
        return Err(format!(
            "truncated delta: {} bytes, shorter than header and checksum ({})",
            bytes.len(),
            HEADER_LEN + CHECKSUM_LEN
        ));
    }
    if bytes[..8] != MAGIC {
        return Err(format!(
            "not a qforget delta: magic is {:?}, expected \"QFDELTA\\0\"",
            String::from_utf8_lossy(&bytes[..8])
        ));
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let version = u16_at(8);
    if version == 0 || version > VERSION {
        return Err(format!(
            "delta format version {version} is not supported (this build reads versions 1 to {VERSION})"
        ));
    }
    let flags = u16_at(10);
    if flags & !FLAG_DEFLATE != 0 {
        return Err(format!("unknown flags 0x{flags:04x} in the delta header"));
    }
    let stored = u64_at(12);
    let plain_len = u64_at(20);
    let have = (bytes.len() - HEADER_LEN - CHECKSUM_LEN) as u64;
    if stored != have {
        return Err(format!(
            "header says {stored} body bytes, the file holds {have}{}",
            if have < stored { " (truncated?)" } else { "" }
        ));
    }
    if plain_len > MAX_BODY {
        return Err(format!(
            "header says the body decodes to {plain_len} bytes, more than the {} MiB limit",
            MAX_BODY >> 20
        ));
    }
    // Deflate expands at most ~1032:1, so a larger claim is a lie told before inflating.
    let most = if flags & FLAG_DEFLATE != 0 {
        stored.saturating_mul(1032).saturating_add(64)
    } else {
        stored
    };
    if plain_len > most || (flags & FLAG_DEFLATE == 0 && plain_len != stored) {
        return Err(format!(
            "header says the body decodes to {plain_len} bytes, impossible for {stored} {} bytes",
            if flags & FLAG_DEFLATE != 0 {
                "deflated"
            } else {
                "uncompressed"
            }
        ));
    }
    let end = bytes.len() - CHECKSUM_LEN;
    let want: Hash = bytes[end..].try_into().expect("32 bytes");
    let got = sha256(&bytes[..end]);
    if got != want {
        return Err(format!(
            "checksum mismatch: the file records {}, its contents hash to {} (corrupt or edited)",
            hex(&want),
            hex(&got)
        ));
    }
    let body = &bytes[HEADER_LEN..end];
    let inflated;
    let plain: &[u8] = if flags & FLAG_DEFLATE != 0 {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(body)
            .take(plain_len + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("compressed body is corrupt: {e}"))?;
        inflated = out;
        &inflated
    } else {
        body
    };
    if plain.len() as u64 != plain_len {
        return Err(format!(
            "body decodes to {} bytes, the header says {plain_len}",
            plain.len()
        ));
    }
    let (b, rest): (DeltaBody, &[u8]) =
        postcard::take_from_bytes(plain).map_err(|e| format!("body does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} stray bytes after the body", rest.len()));
    }
    if version_of(&b) > version {
        return Err(format!(
            "a version {version} delta holds a version {} tensor form",
            version_of(&b)
        ));
    }
    validate(&b)?;
    Ok((b, want))
}

/// Structural checks that do not need the model.
fn validate(b: &DeltaBody) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for t in &b.tensors {
        if !names.insert(t.name.as_str()) {
            return Err(format!("initializer '{}' appears twice", t.name));
        }
        match &t.change {
            Change::Dense(v) if v.len() as u64 != t.len => {
                return Err(format!(
                    "initializer '{}': {} dense values for {} elements",
                    t.name,
                    v.len(),
                    t.len
                ))
            }
            Change::Sparse { gaps, values } if gaps.len() != values.len() => {
                return Err(format!(
                    "initializer '{}': {} indices but {} values",
                    t.name,
                    gaps.len(),
                    values.len()
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Read a delta file through a memory map and decode it.
pub fn read(path: &Path) -> crate::Result<(DeltaBody, Hash)> {
    let bad = |reason: String| crate::Error::Delta {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| crate::Error::io(path, e))?;
    if !meta.is_file() {
        return Err(bad("not a regular file (a delta is a file)".into()));
    }
    let len = meta.len();
    if len == 0 {
        return decode(&[]).map_err(bad);
    }
    if len > MAX_BODY + (HEADER_LEN + CHECKSUM_LEN) as u64 {
        return Err(bad(format!("{len} bytes is too large for a delta")));
    }
    // SAFETY: the map is read-only and private to this call; the bytes are checksummed before
    // use, so a concurrent writer can at worst make the checksum fail. qforget itself never
    // writes a delta in place (it renames a new file over it, which leaves this map intact).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| crate::Error::io(path, e))?;
    decode(&map).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(change: Change) -> DeltaBody {
        DeltaBody {
            base_sha256: [1; 32],
            parent: None,
            request_id: "r".into(),
            method: "m".into(),
            settings: BTreeMap::new(),
            created_unix_ms: 0,
            forget_fingerprint: [2; 32],
            forget_count: 1,
            tensors: vec![TensorDelta {
                name: "w".into(),
                len: 4,
                change,
            }],
        }
    }

    /// A file carries the lowest version that holds it; a version-1 header over a grid form
    /// (an edited file) is refused.
    #[test]
    fn version_follows_the_forms_used() {
        let (flat, _) = encode(&body(Change::Coded {
            changed: 1,
            bytes: vec![0; 5],
        }));
        assert_eq!(u16::from_le_bytes([flat[8], flat[9]]), 1);
        assert!(decode(&flat).is_ok());
        let (grid, _) = encode(&body(Change::Grid {
            rows: 2,
            changed: 1,
            bytes: vec![0; 5],
        }));
        assert_eq!(u16::from_le_bytes([grid[8], grid[9]]), 2);
        assert!(decode(&grid).is_ok());
        let mut old = grid[..grid.len() - CHECKSUM_LEN].to_vec();
        old[8..10].copy_from_slice(&1u16.to_le_bytes());
        let h = sha256(&old);
        old.extend_from_slice(&h);
        let e = decode(&old).unwrap_err();
        assert!(e.contains("version 1 delta holds a version 2"), "{e}");
    }
}

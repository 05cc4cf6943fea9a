//! The range coder of `rc.rs`, told the tensor's rows: a weight tensor seen as a matrix
//! (`rows` = its first dimension, an output channel or unit per row for Conv and Gemm, an input
//! feature for MatMul) first says which rows and which columns hold any change, then codes the
//! changed-bits of the elements where an active row meets an active column only.
//!
//! Why: a forget request's changes are not spread evenly. On the W4 memorizing CNN's random-10 %
//! delta (`fc1`, 128 × 1568, 2.24 % changed) 50 of the 128 output units and 504 of the 1,568
//! input features did not change at all (units and features the forget set never moved, or
//! that the sparsify rounds put back), and coding every one of their elements' "unchanged" bits
//! at the tensor's average rate cost about 350 of the 4,456 bytes. Two flags per row and column
//! cost a few dozen.
//!
//! Layout (all through one encoder, probabilities as in `rc.rs`): `rows` row flags (context:
//! the previous row's flag), `len / rows` column flags (context: the previous column's flag),
//! then, row by row and for active rows only, the changed-bit of each active column (context:
//! whether the previous coded element of the row changed, "no" at each row start) followed,
//! when set, by the difference byte through the 256-leaf tree. Decoding is bounded by `len`;
//! a flag that marks a row or column without a change, or a count that differs from the
//! header's, is an error.

use super::rc::{decode_byte, encode_byte, Decoder, Encoder, HALF};

/// Adaptive probabilities of the grid form.
struct Model {
    row: [u16; 2],
    col: [u16; 2],
    changed: [u16; 2],
    tree: [u16; 256],
}

impl Model {
    fn new() -> Self {
        Model {
            row: [HALF; 2],
            col: [HALF; 2],
            changed: [HALF; 2],
            tree: [HALF; 256],
        }
    }
}

/// The column count of `len` elements in `rows` rows, or why that is no grid.
fn columns(len: usize, rows: u64) -> Result<usize, String> {
    if rows == 0 || rows > len as u64 || !(len as u64).is_multiple_of(rows) {
        return Err(format!("{rows} rows do not divide {len} elements"));
    }
    Ok(len / rows as usize)
}

/// Code byte differences (0 = unchanged) of a `rows`-row matrix. Returns (number of changed
/// elements, coded bytes), or `None` when `rows` does not divide the length.
pub fn encode(diffs: &[u8], rows: u64) -> Option<(u64, Vec<u8>)> {
    let cols = columns(diffs.len(), rows).ok()?;
    let rows = rows as usize;
    let mut row_on = vec![false; rows];
    let mut col_on = vec![false; cols];
    for (i, &d) in diffs.iter().enumerate() {
        if d != 0 {
            row_on[i / cols] = true;
            col_on[i % cols] = true;
        }
    }
    let mut m = Model::new();
    let mut e = Encoder::new();
    flags(&mut e, &mut m.row, &row_on);
    flags(&mut e, &mut m.col, &col_on);
    let active: Vec<usize> = (0..cols).filter(|&c| col_on[c]).collect();
    let mut count = 0u64;
    for r in (0..rows).filter(|&r| row_on[r]) {
        let mut prev = 0usize;
        for &c in &active {
            let d = diffs[r * cols + c];
            e.bit(&mut m.changed[prev], d != 0);
            if d != 0 {
                count += 1;
                encode_byte(&mut e, &mut m.tree, d);
            }
            prev = usize::from(d != 0);
        }
    }
    Some((count, e.finish()))
}

fn flags(e: &mut Encoder, p: &mut [u16; 2], on: &[bool]) {
    let mut prev = 0usize;
    for &f in on {
        e.bit(&mut p[prev], f);
        prev = usize::from(f);
    }
}

fn read_flags(d: &mut Decoder, p: &mut [u16; 2], n: usize) -> Result<Vec<bool>, String> {
    let mut prev = 0usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let f = d.bit(&mut p[prev])?;
        out.push(f);
        prev = usize::from(f);
    }
    Ok(out)
}

/// Decode `len` byte differences of a `rows`-row matrix; `count` (the number of changed
/// elements the file claims) must match what the coded bits say.
pub fn decode(data: &[u8], len: usize, rows: u64, count: u64) -> Result<Vec<u8>, String> {
    if count > len as u64 {
        return Err(format!("{count} changed elements claimed for {len}"));
    }
    let cols = columns(len, rows)?;
    let rows = rows as usize;
    let mut m = Model::new();
    let mut d = Decoder::new(data)?;
    let row_on = read_flags(&mut d, &mut m.row, rows)?;
    let col_on = read_flags(&mut d, &mut m.col, cols)?;
    let active: Vec<usize> = (0..cols).filter(|&c| col_on[c]).collect();
    let mut out = vec![0u8; len];
    let mut seen = 0u64;
    let mut col_seen = vec![false; cols];
    for r in (0..rows).filter(|&r| row_on[r]) {
        let (mut prev, mut any) = (0usize, false);
        for &c in &active {
            let changed = d.bit(&mut m.changed[prev])?;
            if changed {
                seen += 1;
                if seen > count {
                    return Err(format!(
                        "more than the {count} changed elements the header claims"
                    ));
                }
                let v = decode_byte(&mut d, &mut m.tree)?;
                if v == 0 {
                    return Err(format!(
                        "row {r}, column {c}: a changed element of difference 0"
                    ));
                }
                out[r * cols + c] = v;
                col_seen[c] = true;
                any = true;
            }
            prev = usize::from(changed);
        }
        if !any {
            return Err(format!("row {r} is flagged as changed but holds no change"));
        }
    }
    if let Some(c) = active.iter().find(|&&c| !col_seen[c]) {
        return Err(format!(
            "column {c} is flagged as changed but holds no change"
        ));
    }
    if seen != count {
        return Err(format!(
            "{seen} changed elements decoded, the header claims {count}"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(
            rows in 1u64..20,
            cols in 1usize..60,
            seed in any::<u64>(),
            density in 0u64..100,
        ) {
            let mut s = seed | 1;
            let v: Vec<u8> = (0..rows as usize * cols)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    if s % 100 < density { (s >> 8) as u8 } else { 0 }
                })
                .collect();
            let (c, bytes) = encode(&v, rows).unwrap();
            prop_assert_eq!(c, v.iter().filter(|&&x| x != 0).count() as u64);
            prop_assert_eq!(decode(&bytes, v.len(), rows, c).unwrap(), v);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64), len in 0usize..500, rows in 0u64..40, c in 0u64..600) {
            let _ = decode(&b, len, rows, c);
        }
    }

    /// Changes confined to some rows and columns (as a forget request leaves them) cost less
    /// than in the row-blind form of `rc.rs`; changes spread evenly cost about the same.
    #[test]
    fn idle_rows_and_columns_are_nearly_free() {
        let (rows, cols) = (128usize, 1568usize);
        let mut s = 99u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let v: Vec<u8> = (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                let x = next();
                // 60 % of the rows and 2/3 of the columns can change, at 5 % each.
                if r % 5 < 3 && c % 3 != 0 && x.is_multiple_of(20) {
                    [1u8, 255][(x >> 8) as usize % 2]
                } else {
                    0
                }
            })
            .collect();
        let (c, grid) = encode(&v, rows as u64).unwrap();
        let (c1, flat) = super::super::rc::encode(&v);
        assert_eq!(c, c1);
        assert_eq!(decode(&grid, v.len(), rows as u64, c).unwrap(), v);
        assert!(
            (grid.len() as f64) < 0.93 * flat.len() as f64,
            "grid {} bytes, flat {}",
            grid.len(),
            flat.len()
        );
        // Evenly spread: within 2 % of the flat form.
        let even: Vec<u8> = (0..rows * cols)
            .map(|_| if next().is_multiple_of(40) { 1 } else { 0 })
            .collect();
        let (_, g) = encode(&even, rows as u64).unwrap();
        let (_, f) = super::super::rc::encode(&even);
        assert!(
            (g.len() as f64) < 1.02 * f.len() as f64,
            "{} vs {}",
            g.len(),
            f.len()
        );
    }

    #[test]
    fn inconsistent_streams_are_errors() {
        assert!(encode(&[0, 1, 0], 2).is_none());
        assert!(decode(&[0; 8], 3, 2, 0)
            .unwrap_err()
            .contains("do not divide"));
        let v = [0u8, 1, 0, 0, 0, 7];
        let (c, bytes) = encode(&v, 2).unwrap();
        assert_eq!(decode(&bytes, 6, 2, c).unwrap(), v);
        assert!(decode(&bytes, 6, 2, c + 1).is_err());
        assert!(decode(&bytes, 6, 3, c).is_err() || decode(&bytes, 6, 3, c).unwrap() != v);
        assert!(decode(&bytes[..bytes.len() - 1], 6, 2, c).is_err());
    }
}

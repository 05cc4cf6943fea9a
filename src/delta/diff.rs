//! Turning (old, new) initializer values into a [`Change`] and back. Integer tensors store
//! wrapping differences (`new - old`), so small weight updates become small numbers that
//! deflate well; float tensors store new values. 4-bit tensors store differences modulo 16
//! (a nibble each, packed two per byte by the serializer, one symbol each in the coded forms).
//! Of the forms that apply (range-coded flat and, for a matrix, by rows and columns; sparse;
//! dense) the one whose deflated postcard encoding is smallest is kept.

use crate::onnx::patch::TensorValues;

use super::format::{Change, TensorDelta};

/// The change from `old` to `new`, or `None` when they are equal (bit for bit). `dims` is the
/// initializer's shape in the model (its first dimension gives the rows of the grid form). The
/// error says what does not fit (type or length).
pub fn diff(
    name: &str,
    dims: &[u64],
    old: &TensorValues,
    new: &TensorValues,
) -> Result<Option<TensorDelta>, String> {
    use TensorValues::*;
    if old.len() != new.len() || old.type_name() != new.type_name() {
        return Err(format!(
            "initializer '{name}' is {} × {} in the model, the update gives {} × {}",
            old.len(),
            old.type_name(),
            new.len(),
            new.type_name()
        ));
    }
    // Per-element differences (integers) or new values (floats), and which elements changed.
    let (dense, changed): (TensorValues, Vec<usize>) = match (old, new) {
        (I8(a), I8(b)) => {
            let d: Vec<i8> = a.iter().zip(b).map(|(x, y)| y.wrapping_sub(*x)).collect();
            let c = nonzero(d.iter().map(|&x| x != 0));
            (I8(d), c)
        }
        (U8(a), U8(b)) => {
            let d: Vec<u8> = a.iter().zip(b).map(|(x, y)| y.wrapping_sub(*x)).collect();
            let c = nonzero(d.iter().map(|&x| x != 0));
            (U8(d), c)
        }
        (I32(a), I32(b)) => {
            let d: Vec<i32> = a.iter().zip(b).map(|(x, y)| y.wrapping_sub(*x)).collect();
            let c = nonzero(d.iter().map(|&x| x != 0));
            (I32(d), c)
        }
        (F32(a), F32(b)) => {
            let c = nonzero(a.iter().zip(b).map(|(x, y)| x.to_bits() != y.to_bits()));
            (F32(b.clone()), c)
        }
        (I4(a), I4(b)) => {
            let d: Vec<i8> = a.iter().zip(b).map(|(x, y)| wrap_i4(y - x)).collect();
            let c = nonzero(d.iter().map(|&x| x != 0));
            (I4(d), c)
        }
        (U4(a), U4(b)) => {
            let d: Vec<u8> = a
                .iter()
                .zip(b)
                .map(|(x, y)| y.wrapping_sub(*x) & 0x0f)
                .collect();
            let c = nonzero(d.iter().map(|&x| x != 0));
            (U4(d), c)
        }
        _ => unreachable!("type names compared above"),
    };
    if changed.is_empty() {
        return Ok(None);
    }
    let len = old.len() as u64;
    let dense_td = TensorDelta {
        name: name.to_string(),
        len,
        change: Change::Dense(dense.clone()),
    };
    if old.len() > u32::MAX as usize {
        return Ok(Some(dense_td));
    }
    let mut gaps = Vec::with_capacity(changed.len());
    let mut prev: Option<usize> = None;
    for &i in &changed {
        gaps.push(match prev {
            None => i as u32,
            Some(p) => (i - p - 1) as u32,
        });
        prev = Some(i);
    }
    let values = match &dense {
        I8(d) => I8(changed.iter().map(|&i| d[i]).collect()),
        U8(d) => U8(changed.iter().map(|&i| d[i]).collect()),
        I32(d) => I32(changed.iter().map(|&i| d[i]).collect()),
        F32(d) => F32(changed.iter().map(|&i| d[i]).collect()),
        I4(d) => I4(changed.iter().map(|&i| d[i]).collect()),
        U4(d) => U4(changed.iter().map(|&i| d[i]).collect()),
    };
    let sparse_td = TensorDelta {
        name: name.to_string(),
        len,
        change: Change::Sparse { gaps, values },
    };
    let mut best = vec![sparse_td, dense_td];
    let bytes = match &dense {
        I8(d) => Some(d.iter().map(|&x| x as u8).collect::<Vec<u8>>()),
        U8(d) => Some(d.clone()),
        I4(d) => Some(d.iter().map(|&x| x as u8 & 0x0f).collect()),
        U4(d) => Some(d.clone()),
        _ => None,
    };
    if let Some(b) = bytes {
        let rows = dims.first().copied().unwrap_or(1);
        if dims.len() >= 2 && rows > 1 && rows < len {
            if let Some((changed, bytes)) = super::rc_grid::encode(&b, rows) {
                best.insert(
                    0,
                    TensorDelta {
                        name: name.to_string(),
                        len,
                        change: Change::Grid {
                            rows,
                            changed,
                            bytes,
                        },
                    },
                );
            }
        }
        let (changed, bytes) = super::rc::encode(&b);
        best.insert(
            0,
            TensorDelta {
                name: name.to_string(),
                len,
                change: Change::Coded { changed, bytes },
            },
        );
    }
    // The smallest after the body's deflate (ties: the earlier, i.e. coded, grid, sparse).
    Ok(best.into_iter().min_by_key(deflated_size))
}

/// Size of a tensor's change once postcard-encoded and deflated, as the file will hold it.
fn deflated_size(t: &TensorDelta) -> usize {
    use std::io::Write;
    let plain = postcard::to_stdvec(t).unwrap_or_default();
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    match z.write_all(&plain).and_then(|_| z.finish()) {
        Ok(v) => v.len().min(plain.len()),
        Err(_) => plain.len(),
    }
}

fn nonzero(it: impl Iterator<Item = bool>) -> Vec<usize> {
    it.enumerate().filter(|(_, c)| *c).map(|(i, _)| i).collect()
}

/// Apply one tensor's change to its current values; the error says what does not fit.
pub fn apply(t: &TensorDelta, cur: &TensorValues) -> Result<TensorValues, String> {
    use TensorValues::*;
    let name = &t.name;
    if cur.len() as u64 != t.len {
        return Err(format!(
            "initializer '{name}' has {} elements in the model, the delta expects {}",
            cur.len(),
            t.len
        ));
    }
    let vals = match &t.change {
        Change::Dense(v) | Change::Sparse { values: v, .. } => v,
        Change::Coded { changed, bytes } => {
            return apply_coded(t, cur, |n| super::rc::decode(bytes, n, *changed))
        }
        Change::Grid {
            rows,
            changed,
            bytes,
        } => {
            return apply_coded(t, cur, |n| {
                super::rc_grid::decode(bytes, n, *rows, *changed)
            })
        }
    };
    if vals.type_name() != cur.type_name() {
        return Err(format!(
            "initializer '{name}' is {} in the model, the delta holds {}",
            cur.type_name(),
            vals.type_name()
        ));
    }
    let idx: Vec<usize> = match &t.change {
        Change::Dense(_) => (0..cur.len()).collect(),
        Change::Coded { .. } | Change::Grid { .. } => unreachable!("returned above"),
        Change::Sparse { gaps, .. } => {
            let mut out = Vec::with_capacity(gaps.len());
            let mut next = 0u64;
            for &g in gaps {
                let i = next + g as u64;
                if i >= t.len {
                    return Err(format!(
                        "initializer '{name}': changed index {i} is out of range (it has {} elements)",
                        t.len
                    ));
                }
                out.push(i as usize);
                next = i + 1;
            }
            out
        }
    };
    let mut new = cur.clone();
    match (&mut new, vals) {
        (I8(n), I8(d)) => idx
            .iter()
            .zip(d)
            .for_each(|(&i, v)| n[i] = n[i].wrapping_add(*v)),
        (U8(n), U8(d)) => idx
            .iter()
            .zip(d)
            .for_each(|(&i, v)| n[i] = n[i].wrapping_add(*v)),
        (I32(n), I32(d)) => idx
            .iter()
            .zip(d)
            .for_each(|(&i, v)| n[i] = n[i].wrapping_add(*v)),
        (F32(n), F32(d)) => idx.iter().zip(d).for_each(|(&i, v)| n[i] = *v),
        (I4(n), I4(d)) => idx
            .iter()
            .zip(d)
            .for_each(|(&i, v)| n[i] = wrap_i4(n[i] + v)),
        (U4(n), U4(d)) => idx
            .iter()
            .zip(d)
            .for_each(|(&i, v)| n[i] = n[i].wrapping_add(*v) & 0x0f),
        _ => unreachable!("types compared above"),
    }
    Ok(new)
}

/// Apply range-coded byte differences (8- and 4-bit tensors only); `decode(n)` gives the `n`
/// differences.
fn apply_coded(
    t: &TensorDelta,
    cur: &TensorValues,
    decode: impl Fn(usize) -> Result<Vec<u8>, String>,
) -> Result<TensorValues, String> {
    use TensorValues::*;
    let name = &t.name;
    let diffs = |n: usize| decode(n).map_err(|e| format!("initializer '{name}': {e}"));
    Ok(match cur {
        I8(v) => I8(v
            .iter()
            .zip(diffs(v.len())?)
            .map(|(&x, d)| x.wrapping_add(d as i8))
            .collect()),
        U8(v) => U8(v
            .iter()
            .zip(diffs(v.len())?)
            .map(|(&x, d)| x.wrapping_add(d))
            .collect()),
        I4(v) => I4(v
            .iter()
            .zip(nibbles(diffs(v.len())?)?)
            .map(|(&x, d)| wrap_i4(x.wrapping_add(d as i8)))
            .collect()),
        U4(v) => U4(v
            .iter()
            .zip(nibbles(diffs(v.len())?)?)
            .map(|(&x, d)| x.wrapping_add(d) & 0x0f)
            .collect()),
        other => {
            return Err(format!(
            "initializer '{name}' is {} in the model, the delta holds coded int8/uint8/4-bit differences",
            other.type_name()
        ))
        }
    })
}

/// A signed value taken modulo 16 into −8..=7 (4-bit two's complement).
fn wrap_i4(v: i8) -> i8 {
    ((v as u8) << 4) as i8 >> 4
}

/// Coded differences of a 4-bit tensor: each must be a nibble.
fn nibbles(d: Vec<u8>) -> Result<Vec<u8>, String> {
    match d.iter().find(|&&x| x > 15) {
        Some(x) => Err(format!(
            "a coded difference of a 4-bit tensor is {x}, not a 4-bit value"
        )),
        None => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_picks_the_smaller_form() {
        let old = TensorValues::I8((0..1000).map(|i| (i % 200) as i8).collect());
        let mut few = old.clone();
        if let TensorValues::I8(v) = &mut few {
            v[3] = 100;
            v[999] = -128;
        }
        let t = diff("w", &[], &old, &few).unwrap().unwrap();
        assert!(matches!(t.change, Change::Sparse { .. }));
        assert_eq!(apply(&t, &old).unwrap(), few);
        let all = TensorValues::I8((0..1000).map(|i| (i % 7) as i8).collect());
        let t = diff("w", &[], &old, &all).unwrap().unwrap();
        assert!(!matches!(t.change, Change::Sparse { .. }));
        assert_eq!(apply(&t, &old).unwrap(), all);
        // Every form applies the same way.
        for change in [
            Change::Dense(TensorValues::I8(vec![0, 1, 0, -1])),
            Change::Sparse {
                gaps: vec![1, 1],
                values: TensorValues::I8(vec![1, -1]),
            },
            Change::Coded {
                changed: 2,
                bytes: crate::delta::rc::encode(&[0, 1, 0, 255]).1,
            },
            Change::Grid {
                rows: 2,
                changed: 2,
                bytes: crate::delta::rc_grid::encode(&[0, 1, 0, 255], 2).unwrap().1,
            },
        ] {
            let t = TensorDelta {
                name: "w".into(),
                len: 4,
                change,
            };
            let got = apply(&t, &TensorValues::I8(vec![5, 5, 5, 5])).unwrap();
            assert_eq!(got, TensorValues::I8(vec![5, 6, 5, 4]));
        }
        assert!(diff("w", &[], &old, &old).unwrap().is_none());
        let s_old = TensorValues::F32(vec![0.5, f32::NAN, 1.0]);
        let s_new = TensorValues::F32(vec![0.5, f32::NAN, 2.0]);
        let t = diff("s", &[], &s_old, &s_new).unwrap().unwrap();
        assert_eq!(
            format!("{:?}", apply(&t, &s_old).unwrap()),
            format!("{s_new:?}")
        );
        assert!(diff("w", &[], &old, &s_old).is_err());
    }

    /// A weight matrix whose changes sit in a few rows and columns gets the grid form, which
    /// applies exactly; the same differences without dims (no rows to use) do not.
    #[test]
    fn changes_confined_to_rows_and_columns_take_the_grid_form() {
        let (rows, cols) = (64usize, 400usize);
        let old = TensorValues::I8(vec![3; rows * cols]);
        let mut new = old.clone();
        let mut s = 7u64;
        if let TensorValues::I8(v) = &mut new {
            for (i, x) in v.iter_mut().enumerate() {
                let (r, c) = (i / cols, i % cols);
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Half the rows and a third of the columns change, at 10 % each.
                if r % 2 == 1 && c % 3 == 2 && s.is_multiple_of(10) {
                    *x = if s % 4 < 2 { 4 } else { 2 };
                }
            }
        }
        let t = diff("w", &[rows as u64, cols as u64], &old, &new)
            .unwrap()
            .unwrap();
        assert!(
            matches!(t.change, Change::Grid { rows: 64, .. }),
            "{:?}",
            std::mem::discriminant(&t.change)
        );
        assert_eq!(apply(&t, &old).unwrap(), new);
        let flat = diff("w", &[], &old, &new).unwrap().unwrap();
        assert!(!matches!(flat.change, Change::Grid { .. }));
        assert_eq!(apply(&flat, &old).unwrap(), new);
    }

    #[test]
    fn out_of_range_indices_are_errors() {
        let t = TensorDelta {
            name: "w".into(),
            len: 3,
            change: Change::Sparse {
                gaps: vec![1, u32::MAX],
                values: TensorValues::I8(vec![1, 1]),
            },
        };
        let e = apply(&t, &TensorValues::I8(vec![0; 3])).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn four_bit_differences_wrap_modulo_16_and_every_form_applies() {
        let old = TensorValues::I4((0..301).map(|i| (i % 16 - 8) as i8).collect());
        let mut new = old.clone();
        if let TensorValues::I4(v) = &mut new {
            v[0] = 7; // −8 → 7: +15, i.e. −1 modulo 16
            v[300] = -8;
            v[150] = -v[150] - 1; // stays in −8..=7
        }
        let t = diff("w", &[], &old, &new).unwrap().unwrap();
        assert_eq!(apply(&t, &old).unwrap(), new);
        let (TensorValues::I4(a), TensorValues::I4(b)) = (&old, &new) else {
            unreachable!("built above")
        };
        let dense = Change::Dense(TensorValues::I4(
            a.iter().zip(b).map(|(x, y)| wrap_i4(y - x)).collect(),
        ));
        let td = TensorDelta {
            name: "w".into(),
            len: 301,
            change: dense,
        };
        assert_eq!(apply(&td, &old).unwrap(), new);
        // The serialized dense form packs two differences per byte.
        let bytes = postcard::to_stdvec(&td).unwrap();
        assert!(bytes.len() < 301 / 2 + 16, "{} bytes", bytes.len());
        let back: TensorDelta = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(apply(&back, &old).unwrap(), new);
        // UINT4 wraps the same way.
        let u_old = TensorValues::U4(vec![0, 15, 7]);
        let u_new = TensorValues::U4(vec![15, 0, 7]);
        let t = diff("u", &[], &u_old, &u_new).unwrap().unwrap();
        assert_eq!(apply(&t, &u_old).unwrap(), u_new);
        // A coded difference that is not a nibble is an error.
        let bad = TensorDelta {
            name: "u".into(),
            len: 3,
            change: Change::Coded {
                changed: 1,
                bytes: crate::delta::rc::encode(&[0, 16, 0]).1,
            },
        };
        assert!(apply(&bad, &u_old)
            .unwrap_err()
            .contains("not a 4-bit value"));
    }
}

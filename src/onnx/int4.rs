//! 4-bit tensors (ONNX `INT4` = 22, `UINT4` = 21): two elements per byte, the first in the low
//! nibble, an odd count padding the last high nibble. `raw_data` holds those bytes; `int32_data`
//! holds one packed byte per entry (ONNX 1.16's rule), so both roads end in the same bytes.
//!
//! Kept apart from the 8-bit decoding because the byte count is not the element count: every
//! length check here is in packed bytes, and a truncated tensor is an error, never a short read.

/// ONNX TensorProto.DataType code of UINT4.
pub const UINT4: i32 = 21;
/// ONNX TensorProto.DataType code of INT4.
pub const INT4: i32 = 22;

/// Bytes that hold `count` packed 4-bit elements.
pub fn packed_len(count: usize) -> usize {
    count.div_ceil(2)
}

/// The `count` nibbles of `bytes`, low nibble first, as unsigned values 0..=15. The caller
/// checks `bytes.len() == packed_len(count)`.
fn nibbles(bytes: &[u8], count: usize) -> impl Iterator<Item = u8> + '_ {
    (0..count).map(move |i| (bytes[i / 2] >> (4 * (i % 2))) & 0x0f)
}

/// Unpack signed 4-bit elements (−8..=7, two's complement in the nibble).
pub fn unpack_i4(bytes: &[u8], count: usize) -> Vec<i8> {
    nibbles(bytes, count)
        .map(|n| ((n << 4) as i8) >> 4)
        .collect()
}

/// Unpack unsigned 4-bit elements (0..=15).
pub fn unpack_u4(bytes: &[u8], count: usize) -> Vec<u8> {
    nibbles(bytes, count).collect()
}

/// Pack 4-bit values given as their low nibbles (signed values are taken modulo 16, so the
/// caller checks ranges first); an odd count leaves the last high nibble zero.
pub fn pack(values: impl ExactSizeIterator<Item = u8>) -> Vec<u8> {
    let mut out = vec![0u8; packed_len(values.len())];
    for (i, v) in values.enumerate() {
        out[i / 2] |= (v & 0x0f) << (4 * (i % 2));
    }
    out
}

/// The packed bytes of a tensor from `int32_data` (one byte per entry), or a message saying
/// which entry is not a byte.
pub fn bytes_from_int32(data: &[i32]) -> Result<Vec<u8>, String> {
    data.iter()
        .enumerate()
        .map(|(i, &v)| {
            u8::try_from(v).map_err(|_| {
                format!("int32_data entry {i} is {v}, not a byte of two packed 4-bit values")
            })
        })
        .collect()
}

/// A human description of a packed tensor's size problem, or `None` when `have` bytes are
/// exactly what `count` elements need.
pub fn size_error(have: usize, count: usize, dims: &[usize]) -> Option<String> {
    let need = packed_len(count);
    (have != need).then(|| {
        format!(
            "holds {have} bytes of packed 4-bit data, dimensions {dims:?} ({count} values) need {need}{}",
            if have < need { " (truncated)" } else { "" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_nibble_first_and_sign_extension() {
        // 0x8F: first element 0xF (−1 / 15), second 0x8 (−8 / 8); 0x07: 7 then pad.
        let bytes = [0x8f, 0x07];
        assert_eq!(unpack_i4(&bytes, 3), vec![-1, -8, 7]);
        assert_eq!(unpack_u4(&bytes, 3), vec![15, 8, 7]);
        assert_eq!(pack([15u8, 8, 7].into_iter()), bytes.to_vec());
        assert_eq!(
            pack([-1i8, -8, 7].into_iter().map(|v| v as u8)),
            bytes.to_vec()
        );
    }

    #[test]
    fn every_value_round_trips_in_both_positions() {
        let vals: Vec<i8> = (-8..=7).chain((-8..=7).rev()).chain([3]).collect();
        let p = pack(vals.iter().map(|&v| v as u8));
        assert_eq!(p.len(), packed_len(vals.len()));
        assert_eq!(unpack_i4(&p, vals.len()), vals);
    }

    #[test]
    fn sizes_and_int32_entries_are_checked() {
        assert_eq!(size_error(2, 3, &[3]), None);
        assert!(size_error(1, 3, &[3]).unwrap().contains("truncated"));
        assert!(size_error(3, 3, &[3]).is_some());
        assert_eq!(bytes_from_int32(&[0, 255]).unwrap(), vec![0, 255]);
        assert!(bytes_from_int32(&[256]).unwrap_err().contains("entry 0"));
        assert!(bytes_from_int32(&[-1]).is_err());
    }
}

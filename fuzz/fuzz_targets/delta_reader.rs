//! Any bytes through the delta reader (header, checksum, inflate, postcard); a second mode
//! re-signs the input with a valid header and checksum so the fuzzer also reaches the
//! postcard decoder and the body checks behind the checksum. Decoded deltas are applied to a
//! tiny model to exercise index and length checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforget::delta::format::{decode, sha256, CHECKSUM_LEN, HEADER_LEN, MAGIC, VERSION};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    if let Some((&flags, body)) = data.split_first() {
        let plain_len = if flags & 1 == 0 { body.len() as u64 } else { 4 * body.len() as u64 };
        let mut f = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&VERSION.to_le_bytes());
        f.extend_from_slice(&u16::from(flags & 1).to_le_bytes());
        f.extend_from_slice(&(body.len() as u64).to_le_bytes());
        f.extend_from_slice(&plain_len.to_le_bytes());
        f.extend_from_slice(body);
        let h = sha256(&f);
        f.extend_from_slice(&h);
        if let Ok((body, hash)) = decode(&f) {
            let d = qforget::delta::Delta {
                path: "fuzz.qfd".into(),
                body,
                hash,
            };
            let _ = qforget::delta::apply_chain(&tiny_model(), &[d]);
        }
    }
});

/// A model with an int8 initializer "w" [16] and a float initializer "s" [4] (raw_data).
fn tiny_model() -> Vec<u8> {
    let tensor = |name: u8, dt: u8, n: u8| {
        let mut t = vec![0x08, n, 0x10, dt, 0x42, 0x01, name, 0x4a, 16];
        t.extend(std::iter::repeat_n(1u8, 16));
        t
    };
    let mut g = Vec::new();
    for t in [tensor(b'w', 3, 16), tensor(b's', 1, 4)] {
        g.push(0x2a);
        g.push(t.len() as u8);
        g.extend(t);
    }
    let mut m = vec![0x3a, g.len() as u8];
    m.extend(g);
    m
}

//! Any bytes through the idx dataset parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = qforget::data::parse_idx(data) {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    }
});

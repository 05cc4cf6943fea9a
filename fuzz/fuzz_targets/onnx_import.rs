//! Any bytes through the ONNX importer (decode + import into the integer graph) and through
//! the wire-level initializer reader/writer: errors are fine, panics and aborts are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforget::onnx::patch::{initializers, patch_initializers, InitializerUpdate};

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = qforget::onnx::decode_model(data) {
        let _ = qforget::onnx::import(&model, std::path::Path::new("fuzz.onnx"));
    }
    if let Ok(all) = initializers(data) {
        let upd: Vec<InitializerUpdate> = all
            .into_iter()
            .take(4)
            .map(|(name, values)| InitializerUpdate { name, values })
            .collect();
        if let Ok(out) = patch_initializers(data, &upd) {
            // Writing back what was read must read back the same values.
            for u in &upd {
                let again = qforget::onnx::patch::read_initializer(&out, &u.name);
                // Debug text, so that NaN payloads compare equal.
                let again = again.map(|v| format!("{v:?}")).ok();
                assert_eq!(again, Some(format!("{:?}", u.values)));
            }
        }
    }
});

//! Initializers kept in an external data file (ONNX's `data_location = EXTERNAL`): Intel Neural
//! Compressor writes every weight tensor this way, and onnxruntime's optimizer and quantizer do
//! for large models.
//!
//! Why inline: the model's identity for deltas is the sha256 of its bytes, export rewrites
//! initializers in place, and the importer decodes one buffer. Reading each external tensor once
//! and splicing it into its TensorProto as `raw_data` (dropping `external_data` and
//! `data_location`) gives one self-contained model that all of them handle unchanged; an
//! exported model is then one file that onnxruntime loads without the data file. A model with no
//! external tensor comes back as `None` (its bytes are used as they are).
//!
//! The data file must lie in the model's directory or below it (a `location` that is absolute or
//! climbs out with `..` is refused, as onnxruntime refuses it), and every offset and length is
//! checked against the file.

use std::collections::HashMap;
use std::path::{Component, Path};

use super::{fields, graphs, splice, Edit, Field, R};

/// Field numbers of TensorProto.
const RAW_DATA: u64 = 9;
const EXTERNAL_DATA: u64 = 13;
const DATA_LOCATION: u64 = 14;

/// The model with every external initializer inlined, or `None` when it has none. Bytes that are
/// not a well-formed model also give `None`: the decoder names that problem; the errors here
/// are all about external data.
pub fn inline_external(model: &[u8], dir: &Path) -> R<Option<Vec<u8>>> {
    let (Ok(top), Ok(_)) = (fields(model, 0), graphs(model)) else {
        return Ok(None);
    };
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut new: HashMap<usize, Vec<u8>> = HashMap::new();
    for (i, g) in top.iter().enumerate() {
        if g.number == 7 && g.wire == 2 {
            if let Some(v) = inline_graph(&model[g.value..g.end], g.value, dir, &mut files)? {
                new.insert(i, v);
            }
        }
    }
    if new.is_empty() {
        return Ok(None);
    }
    Ok(Some(splice(model, &top, &mut |i| match new.remove(&i) {
        Some(v) => Edit::Value(v),
        None => Edit::Keep,
    })))
}

fn inline_graph(
    g: &[u8],
    base: usize,
    dir: &Path,
    files: &mut HashMap<String, Vec<u8>>,
) -> R<Option<Vec<u8>>> {
    let Ok(gf) = fields(g, base) else {
        return Ok(None);
    };
    let mut new: HashMap<usize, Vec<u8>> = HashMap::new();
    for (i, f) in gf.iter().enumerate() {
        if f.number == 5 && f.wire == 2 {
            let t = &g[f.value..f.end];
            if let Some(v) = inline_tensor(t, base + f.value, dir, files)? {
                new.insert(i, v);
            }
        }
    }
    if new.is_empty() {
        return Ok(None);
    }
    Ok(Some(splice(g, &gf, &mut |i| match new.remove(&i) {
        Some(v) => Edit::Value(v),
        None => Edit::Keep,
    })))
}

fn string(b: &[u8], what: &str) -> R<String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn inline_tensor(
    t: &[u8],
    base: usize,
    dir: &Path,
    files: &mut HashMap<String, Vec<u8>>,
) -> R<Option<Vec<u8>>> {
    let Ok(tf) = fields(t, base) else {
        return Ok(None);
    };
    let external = tf.iter().any(|f| {
        f.number == DATA_LOCATION
            && f.wire == 0
            && super::varint(&t[f.value..f.end], &mut 0) == Ok(1)
    });
    if !external {
        return Ok(None);
    }
    let name = tf
        .iter()
        .find(|f| f.number == 8 && f.wire == 2)
        .map(|f| string(&t[f.value..f.end], "an initializer name"))
        .transpose()?
        .unwrap_or_default();
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for f in tf
        .iter()
        .filter(|f| f.number == EXTERNAL_DATA && f.wire == 2)
    {
        let entry: Vec<Field> = fields(&t[f.value..f.end], base + f.value)
            .map_err(|e| format!("initializer '{name}': malformed external_data entry ({e})"))?;
        let text = |n: u64| -> R<String> {
            entry
                .iter()
                .find(|e| e.number == n && e.wire == 2)
                .map(|e| {
                    string(
                        &t[f.value + e.value..f.value + e.end],
                        "an external_data entry",
                    )
                })
                .transpose()
                .map(|s| s.unwrap_or_default())
        };
        let (key, value) = (text(1)?, text(2)?);
        let number = || {
            value.parse::<u64>().map_err(|_| {
                format!("initializer '{name}': external_data {key} '{value}' is not a number")
            })
        };
        match key.as_str() {
            "location" => location = Some(value.clone()),
            "offset" => offset = number()?,
            "length" => length = Some(number()?),
            _ => {}
        }
    }
    if tf.iter().any(|f| f.number == RAW_DATA) {
        return Err(format!(
            "initializer '{name}' has both raw_data and an external data location"
        ));
    }
    let location = location
        .ok_or_else(|| format!("initializer '{name}' is external but names no location"))?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "initializer '{name}': external data location '{location}' is not a path inside \
             the model's directory"
        ));
    }
    if !files.contains_key(&location) {
        let p = dir.join(rel);
        let bytes = std::fs::read(&p).map_err(|e| {
            format!(
                "initializer '{name}' keeps its data in '{}', which cannot be read: {e}",
                p.display()
            )
        })?;
        files.insert(location.clone(), bytes);
    }
    let file = &files[&location];
    let size = file.len() as u64;
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(size),
    };
    let data = match end {
        Some(end) if offset <= end && end <= size => &file[offset as usize..end as usize],
        _ => {
            return Err(format!(
                "initializer '{name}': external data offset {offset} length {} lies outside \
                 '{location}' ({size} bytes)",
                length
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "(rest)".into())
            ))
        }
    };
    let mut out = splice(t, &tf, &mut |i| {
        if matches!(tf[i].number, EXTERNAL_DATA | DATA_LOCATION) {
            Edit::Drop
        } else {
            Edit::Keep
        }
    });
    out.extend(super::len_field(RAW_DATA, data));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::super::{len_field, put_varint};
    use super::*;

    fn varint_field(number: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, number << 3);
        put_varint(&mut out, v);
        out
    }

    fn entry(key: &str, value: &str) -> Vec<u8> {
        let mut e = len_field(1, key.as_bytes());
        e.extend(len_field(2, value.as_bytes()));
        len_field(EXTERNAL_DATA, &e)
    }

    /// A model with one int8 initializer `w` of 4 elements stored at `offset` of `location`.
    fn model(location: &str, offset: &str, length: &str) -> Vec<u8> {
        let mut t = len_field(8, b"w");
        t.extend(varint_field(2, 3)); // int8
        t.extend(varint_field(1, 4));
        t.extend(entry("location", location));
        t.extend(entry("offset", offset));
        t.extend(entry("length", length));
        t.extend(varint_field(DATA_LOCATION, 1));
        let g = len_field(5, &t);
        let mut m = varint_field(1, 8); // ir_version
        m.extend(len_field(7, &g));
        m
    }

    fn dir_with_data(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("qforget-ext-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("m.onnx_data"), [9u8, 9, 1, 2, 3, 4, 9]).unwrap();
        d
    }

    #[test]
    fn external_tensor_is_inlined_as_raw_data() {
        let d = dir_with_data("ok");
        let out = inline_external(&model("m.onnx_data", "2", "4"), &d)
            .unwrap()
            .expect("one external tensor");
        let vals = super::super::read_initializer(&out, "w").unwrap();
        assert_eq!(vals, super::super::TensorValues::I8(vec![1, 2, 3, 4]));
        // Nothing external is left.
        let again = inline_external(&out, &d).unwrap();
        assert!(again.is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_locations_and_ranges_are_refused_by_name() {
        let d = dir_with_data("bad");
        for (loc, off, len, says) in [
            ("../m.onnx_data", "0", "4", "not a path inside"),
            ("/etc/passwd", "0", "4", "not a path inside"),
            ("missing.bin", "0", "4", "cannot be read"),
            ("m.onnx_data", "5", "4", "lies outside"),
            ("m.onnx_data", "18446744073709551615", "4", "lies outside"),
            ("m.onnx_data", "x", "4", "not a number"),
        ] {
            let err = inline_external(&model(loc, off, len), &d).unwrap_err();
            assert!(err.contains(says) && err.contains("'w'"), "{loc}: {err}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! Delta round trips on the Fashion-MNIST fixture with synthetic weight changes (the real
//! `forget` lives elsewhere): apply(base, delta) must equal the directly patched model bit for
//! bit, chains must be checked, and the delta must stay small.

use super::*;
use crate::onnx::patch::TensorValues;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx-models/fmnist_cnn_qdq.onnx")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qf-delta-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Change `frac` of every int8 initializer's elements by ±1..3 (saturating), deterministically.
pub(crate) fn synthetic(model: &[u8], frac: f64, seed: u64) -> Vec<InitializerUpdate> {
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    patch::initializers(model)
        .unwrap()
        .into_iter()
        .filter_map(|(name, v)| match v {
            TensorValues::I8(mut w) => {
                for x in w.iter_mut() {
                    if (rnd() % 1_000_000) as f64 / 1e6 < frac {
                        let m = (rnd() % 3) as i8 + 1;
                        *x = if rnd() % 2 == 0 {
                            x.saturating_add(m)
                        } else {
                            x.saturating_sub(m)
                        };
                    }
                }
                Some(InitializerUpdate {
                    name,
                    values: TensorValues::I8(w),
                })
            }
            _ => None,
        })
        .collect()
}

fn rec(id: &str) -> RequestRecord {
    RequestRecord {
        request_id: id.into(),
        method: "synthetic".into(),
        settings: BTreeMap::from([("frac".into(), "0.05".into())]),
        forget_ids: vec![5, 3, 9],
        metrics_before: BTreeMap::from([("test_acc".into(), 0.9)]),
        metrics_after: BTreeMap::from([("test_acc".into(), 0.89)]),
    }
}

#[test]
fn apply_reproduces_the_patched_model_and_deltas_are_small() {
    let dir = tmp("ratio");
    let base = std::fs::read(fixture()).unwrap();
    let j = dir.join(journal::DEFAULT_NAME);
    // Measured: 5.34 % and 9.19 % (the 10 % case costs ~7.7 bits per changed weight with the
    // range-coded form; its entropy is ~7.3); the limits guard against regressions.
    for (frac, limit) in [(0.05, 0.06), (0.10, 0.10)] {
        let upd = synthetic(&base, frac, 7);
        let direct = patch::patch_initializers(&base, &upd).unwrap();
        let out = dir.join(format!("d{frac}.qfd"));
        record_request(&fixture(), &[], &upd, &rec(""), &out, &j).unwrap();
        let applied = apply_files(&fixture(), std::slice::from_ref(&out)).unwrap();
        assert!(
            applied == direct,
            "apply(base, delta) must equal the patched model"
        );
        let size = std::fs::metadata(&out).unwrap().len();
        let ratio = size as f64 / base.len() as f64;
        eprintln!(
            "frac {frac}: delta {size} bytes for a {} byte model = {:.2} %",
            base.len(),
            ratio * 100.0
        );
        assert!(
            ratio <= limit,
            "delta is {:.2} % of the model",
            ratio * 100.0
        );
    }
    let jr = journal::read(&j).unwrap();
    assert!(jr.problems.is_empty(), "{:?}", jr.problems);
    assert_eq!(jr.entries.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chains_apply_in_order_and_mismatches_name_the_hash() {
    let dir = tmp("chain");
    let base = std::fs::read(fixture()).unwrap();
    let j = dir.join(journal::DEFAULT_NAME);
    let u1 = synthetic(&base, 0.02, 1);
    let m1 = patch::patch_initializers(&base, &u1).unwrap();
    let u2 = synthetic(&m1, 0.02, 2);
    let m2 = patch::patch_initializers(&m1, &u2).unwrap();
    let (d1, d2) = (dir.join("d1.qfd"), dir.join("d2.qfd"));
    let h1 = record_request(&fixture(), &[], &u1, &rec("r1"), &d1, &j).unwrap();
    record_request(
        &fixture(),
        std::slice::from_ref(&d1),
        &u2,
        &rec("r2"),
        &d2,
        &j,
    )
    .unwrap();
    assert!(apply_files(&fixture(), &[d1.clone(), d2.clone()]).unwrap() == m2);
    assert!(apply_files(&fixture(), std::slice::from_ref(&d1)).unwrap() == m1);
    // A recorded delta is never overwritten.
    let e = record_request(&fixture(), &[], &u1, &rec("again"), &d1, &j)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refusing to overwrite the delta of request 'r1'"),
        "{e}"
    );
    // The same check, before any work: a recorded delta refused, a new path allowed.
    let e = check_recordable(&d1, &j).unwrap_err().to_string();
    assert!(
        e.contains("refusing to overwrite the delta of request 'r1'") && e.contains("d1.qfd"),
        "{e}"
    );
    check_recordable(&dir.join("d3.qfd"), &j).unwrap();
    let e = apply_files(&fixture(), &[d2.clone(), d1.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("d2.qfd") && e.contains(&h1) && e.contains("given first"),
        "{e}"
    );
    let e = apply_files(&fixture(), std::slice::from_ref(&d2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("given first"), "{e}");
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx-models/fmnist_cnn_qop.onnx");
    let e = apply_files(&other, std::slice::from_ref(&d1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("made for a base model with sha256"), "{e}");
    assert!(e.contains(&hex(&sha256(&base))), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_deltas_are_errors() {
    let dir = tmp("corrupt");
    let base = std::fs::read(fixture()).unwrap();
    let out = dir.join("d.qfd");
    let upd = synthetic(&base, 0.01, 3);
    record_request(&fixture(), &[], &upd, &rec("r"), &out, &dir.join("j")).unwrap();
    let good = std::fs::read(&out).unwrap();
    for cut in (0..good.len()).step_by(good.len() / 40 + 1) {
        assert!(format::decode(&good[..cut]).is_err());
    }
    for i in (0..good.len()).step_by(7) {
        let mut b = good.clone();
        b[i] ^= 1;
        assert!(format::decode(&b).is_err(), "flip at {i}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

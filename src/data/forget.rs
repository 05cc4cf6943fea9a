//! Which training samples a forget request names, and which ones the device may still use as
//! retain data. Every method and every metric works on this pair of index lists into the training
//! split, so they are checked here once: a typo'd class, a duplicated id or an empty side is an
//! error with a message, never a silently odd experiment.

use crate::train::batch::shuffled;
use crate::{Error, Result};

/// What to forget.
#[derive(Debug, Clone, PartialEq)]
pub enum ForgetSpec {
    /// Every training sample of one class.
    Class(u8),
    /// These training-split indices (0-based).
    Ids(Vec<usize>),
    /// round(fraction·n) distinct samples drawn with `seed`.
    Random { fraction: f64, seed: u64 },
}

/// A forget set and the retain set beside it, as ascending indices into the training split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub forget: Vec<usize>,
    pub retain: Vec<usize>,
}

/// Added to `seed` for the retain subset, so it is not drawn from the same stream as a random
/// forget set.
const RETAIN_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;

/// Forget set per spec; retain = everything else, or a seeded subset of `retain_limit` of it (the device's buffer).
pub fn select(
    labels: &[u8],
    spec: &ForgetSpec,
    retain_limit: Option<usize>,
    seed: u64,
) -> Result<Split> {
    let n = labels.len();
    if n == 0 {
        return Err(invalid("the training split is empty".into()));
    }
    let forget = match spec {
        ForgetSpec::Class(k) => {
            let classes = *labels.iter().max().unwrap() as usize + 1;
            if *k as usize >= classes {
                return Err(invalid(format!(
                    "forget class {k} is out of range: the training labels have {classes} classes (0..={})",
                    classes - 1
                )));
            }
            let ids: Vec<usize> = (0..n).filter(|&i| labels[i] == *k).collect();
            if ids.is_empty() {
                return Err(invalid(format!(
                    "forget class {k} has no samples in the training split"
                )));
            }
            ids
        }
        ForgetSpec::Ids(ids) => {
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            if let Some(&bad) = sorted.last().filter(|&&i| i >= n) {
                return Err(invalid(format!(
                    "forget id {bad} is out of range: the training split has {n} samples (0..={})",
                    n - 1
                )));
            }
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(invalid(format!(
                    "forget id {} is listed more than once",
                    w[0]
                )));
            }
            sorted
        }
        ForgetSpec::Random { fraction, seed } => {
            if !(*fraction > 0.0 && *fraction < 1.0) {
                return Err(invalid(format!(
                    "forget fraction must be strictly between 0 and 1, got {fraction}"
                )));
            }
            let count = (fraction * n as f64).round() as usize;
            let all: Vec<usize> = (0..n).collect();
            let mut ids = shuffled(&all, *seed);
            ids.truncate(count);
            ids.sort_unstable();
            ids
        }
    };
    if forget.is_empty() {
        let why = match spec {
            ForgetSpec::Class(c) => format!("no training sample has label {c}"),
            ForgetSpec::Ids(_) => "the list of ids is empty".to_string(),
            ForgetSpec::Random { fraction, .. } => {
                format!("a fraction of {fraction} of {n} samples rounds to none")
            }
        };
        return Err(invalid(format!(
            "the forget set is empty: {why} ({n} training samples)"
        )));
    }
    let mut in_forget = vec![false; n];
    for &i in &forget {
        in_forget[i] = true;
    }
    let mut retain: Vec<usize> = (0..n).filter(|&i| !in_forget[i]).collect();
    if let Some(limit) = retain_limit {
        if limit < retain.len() {
            retain = shuffled(&retain, seed.wrapping_add(RETAIN_STREAM));
            retain.truncate(limit);
            retain.sort_unstable();
        }
    }
    if retain.is_empty() {
        return Err(invalid(format!(
            "the retain set is empty: the forget set covers {} of {n} training samples{}",
            forget.len(),
            match retain_limit {
                Some(0) => " and the retain limit is 0",
                _ => "",
            }
        )));
    }
    Ok(Split { forget, retain })
}

/// Added to `seed` for the guard's probe, a stream of its own.
const PROBE_STREAM: u64 = 0xD1B5_4A32_D192_ED03;

/// Default probe size for a retain set of `n`: a tenth of it, at least 200 and at most 1,000
/// samples (accuracy steps of 0.1–0.5 pp, a forward of at most 1,000 images per check), and
/// never more than half of it.
pub fn default_probe_size(n: usize) -> usize {
    (n / 10).clamp(200, 1000).min(n / 2)
}

/// Hold out `size` seeded retain samples as the guard's probe: returns `(train, probe)`, both
/// ascending; training never sees the probe.
pub fn hold_out_probe(retain: &[usize], size: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let size = size.min(retain.len().saturating_sub(1));
    let mut probe = shuffled(retain, seed.wrapping_add(PROBE_STREAM));
    probe.truncate(size);
    probe.sort_unstable();
    let train = retain
        .iter()
        .copied()
        .filter(|i| probe.binary_search(i).is_err())
        .collect();
    (train, probe)
}

/// The classes a forget set removes whole: `Some(classes)` when it is exactly every training
/// sample of one or more classes (a class-wise request, whatever way it was named).
pub fn whole_classes(labels: &[u8], forget: &[usize]) -> Option<Vec<u8>> {
    let mut in_forget = [0usize; 256];
    let mut total = [0usize; 256];
    for &l in labels {
        total[l as usize] += 1;
    }
    for &i in forget {
        in_forget[labels[i] as usize] += 1;
    }
    let classes: Vec<u8> = (0..=255u8).filter(|&k| in_forget[k as usize] > 0).collect();
    (!classes.is_empty()
        && classes
            .iter()
            .all(|&k| in_forget[k as usize] == total[k as usize]))
    .then_some(classes)
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<u8> {
        (0..100).map(|i| (i % 10) as u8).collect()
    }

    fn err(spec: ForgetSpec, limit: Option<usize>) -> String {
        select(&labels(), &spec, limit, 0).unwrap_err().to_string()
    }

    #[test]
    fn class_forget_and_full_retain() {
        let s = select(&labels(), &ForgetSpec::Class(3), None, 0).unwrap();
        assert_eq!(s.forget, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
        assert_eq!(s.retain.len(), 90);
        assert!(s.retain.windows(2).all(|w| w[0] < w[1]));
        assert!(s.retain.iter().all(|&i| i % 10 != 3));
    }

    #[test]
    fn ids_are_sorted_and_checked() {
        let s = select(&labels(), &ForgetSpec::Ids(vec![42, 7, 99]), None, 0).unwrap();
        assert_eq!(s.forget, [7, 42, 99]);
        assert_eq!(s.retain.len(), 97);
        assert!(err(ForgetSpec::Ids(vec![3, 100]), None).contains("forget id 100 is out of range"));
        assert!(err(ForgetSpec::Ids(vec![5, 1, 5]), None)
            .contains("forget id 5 is listed more than once"));
        assert!(err(ForgetSpec::Ids(vec![]), None).contains("forget set is empty"));
        let all = ForgetSpec::Ids((0..100).collect());
        assert!(err(all, None).contains("retain set is empty"));
    }

    #[test]
    fn random_fraction_is_exact_and_seeded() {
        let spec = ForgetSpec::Random {
            fraction: 0.1,
            seed: 7,
        };
        let a = select(&labels(), &spec, None, 0).unwrap();
        assert_eq!(a.forget.len(), 10);
        assert_eq!(a.forget, select(&labels(), &spec, None, 1).unwrap().forget);
        let other = ForgetSpec::Random {
            fraction: 0.1,
            seed: 8,
        };
        assert_ne!(a.forget, select(&labels(), &other, None, 0).unwrap().forget);
        // round(0.125·100) = 13 (12.5 rounds away from zero)
        let s = select(
            &labels(),
            &ForgetSpec::Random {
                fraction: 0.125,
                seed: 1,
            },
            None,
            0,
        )
        .unwrap();
        assert_eq!((s.forget.len(), s.retain.len()), (13, 87));
        for f in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let e = err(
                ForgetSpec::Random {
                    fraction: f,
                    seed: 0,
                },
                None,
            );
            assert!(e.contains("strictly between 0 and 1"), "{e}");
        }
        // 0.001·100 rounds to 0 samples.
        let e = err(
            ForgetSpec::Random {
                fraction: 0.001,
                seed: 0,
            },
            None,
        );
        assert!(e.contains("forget set is empty"), "{e}");
    }

    #[test]
    fn probe_is_held_out_and_seeded() {
        let retain: Vec<usize> = (0..1000).map(|i| i * 3).collect();
        let (train, probe) = hold_out_probe(&retain, 100, 4);
        assert_eq!((train.len(), probe.len()), (900, 100));
        assert!(probe
            .iter()
            .all(|p| retain.contains(p) && !train.contains(p)));
        assert_eq!(hold_out_probe(&retain, 100, 4).1, probe);
        assert_ne!(hold_out_probe(&retain, 100, 5).1, probe);
        // Never the whole retain set.
        assert_eq!(hold_out_probe(&[1, 2], 5, 0).0.len(), 1);
        assert_eq!(default_probe_size(90_000), 1000);
        assert_eq!(default_probe_size(5_000), 500);
        assert_eq!(default_probe_size(1_000), 200);
        assert_eq!(default_probe_size(100), 50);
    }

    #[test]
    fn whole_classes_are_recognised() {
        let l = labels();
        let class3: Vec<usize> = (0..10).map(|i| i * 10 + 3).collect();
        assert_eq!(whole_classes(&l, &class3), Some(vec![3]));
        let mut two = class3.clone();
        two.extend((0..10).map(|i| i * 10 + 5));
        assert_eq!(whole_classes(&l, &two), Some(vec![3, 5]));
        assert_eq!(whole_classes(&l, &class3[1..]), None);
        let mut extra = class3;
        extra.push(4);
        assert_eq!(whole_classes(&l, &extra), None);
    }

    #[test]
    fn bad_classes() {
        assert!(err(ForgetSpec::Class(10), None).contains("forget class 10 is out of range"));
        // Class 2 is inside 0..=3 but absent.
        let e = select(&[0, 1, 3, 3], &ForgetSpec::Class(2), None, 0).unwrap_err();
        assert!(
            e.to_string().contains("forget class 2 has no samples"),
            "{e}"
        );
        assert!(select(&[], &ForgetSpec::Class(0), None, 0).is_err());
    }

    #[test]
    fn retain_limit_is_a_seeded_subset() {
        let spec = ForgetSpec::Class(0);
        let a = select(&labels(), &spec, Some(20), 5).unwrap();
        assert_eq!(a.retain.len(), 20);
        assert!(a.retain.windows(2).all(|w| w[0] < w[1]));
        assert!(a.retain.iter().all(|&i| i % 10 != 0));
        assert_eq!(a, select(&labels(), &spec, Some(20), 5).unwrap());
        assert_ne!(
            a.retain,
            select(&labels(), &spec, Some(20), 6).unwrap().retain
        );
        // A limit above the retain size keeps everything.
        assert_eq!(
            select(&labels(), &spec, Some(1000), 5)
                .unwrap()
                .retain
                .len(),
            90
        );
        assert!(err(spec, Some(0)).contains("retain limit is 0"));
    }
}

//! `qforget ids FILE (--count N | --dataset DIR [--split S])`: check an id list (what a forget
//! request would read) and print its size and the fingerprint the journal would record.

use std::path::{Path, PathBuf};

use anyhow::bail;
use qforget::data::{read_ids, IdxDataset, Split};
use qforget::delta::{hex, journal};

pub fn run(
    file: &Path,
    count: Option<usize>,
    dataset: Option<PathBuf>,
    split: Split,
) -> anyhow::Result<()> {
    let n = match (count, dataset) {
        (Some(n), _) => n,
        (None, Some(d)) => IdxDataset::load(&d, split)?.n,
        (None, None) => bail!(
            "{}: give --count N or --dataset DIR to check the ids against",
            file.display()
        ),
    };
    let ids = read_ids(file, n)?;
    let as_u64: Vec<u64> = ids.iter().map(|&i| i as u64).collect();
    let (fp, k) = journal::fingerprint(&as_u64);
    println!(
        "{}: {k} sample id(s) of {n}, fingerprint sha256 {}",
        file.display(),
        hex(&fp)
    );
    Ok(())
}

//! `qforget eval MODEL --dataset DIR [--split] [--json] [--predictions FILE] [--engine]`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use qforget::data::{IdxDataset, Split};
use serde::Serialize;

use super::output::write_atomic;
use super::Engine;

pub struct EvalArgs {
    pub model: PathBuf,
    pub dataset: PathBuf,
    pub split: Split,
    pub json: bool,
    pub predictions: Option<PathBuf>,
    pub engine: Engine,
}

#[derive(Serialize)]
struct Report<'a> {
    model: String,
    dataset: String,
    split: &'a str,
    engine: &'a str,
    n: usize,
    correct: usize,
    accuracy: f64,
    seconds: f64,
    images_per_second: f64,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let data = IdxDataset::load(&a.dataset, a.split)?;
    let t0 = Instant::now();
    let ev = match a.engine {
        Engine::Qforget => {
            let graph = qforget::onnx::load(&a.model)?;
            qforget::eval::accuracy(&graph, &data)?
        }
        Engine::Tract => tract_eval(&a.model, &data)?,
    };
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(p) = &a.predictions {
        let mut s = String::with_capacity(ev.n * 2);
        for p in &ev.predictions {
            s.push_str(&p.to_string());
            s.push('\n');
        }
        write_atomic(p, s.as_bytes()).context("writing predictions")?;
    }
    let split = match a.split {
        Split::Train => "train",
        Split::Test => "test",
    };
    let r = Report {
        model: a.model.display().to_string(),
        dataset: a.dataset.display().to_string(),
        split,
        engine: match a.engine {
            Engine::Qforget => "qforget",
            Engine::Tract => "tract",
        },
        n: ev.n,
        correct: ev.correct,
        accuracy: ev.accuracy,
        seconds,
        images_per_second: ev.n as f64 / seconds.max(1e-9),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "accuracy {:.2} % ({}/{}) on {} {}  [{}, {:.2} s, {:.0} images/s]",
            100.0 * r.accuracy,
            r.correct,
            r.n,
            r.dataset,
            split,
            r.engine,
            r.seconds,
            r.images_per_second
        );
    }
    Ok(())
}

#[cfg(feature = "tract-engine")]
fn tract_eval(
    model: &std::path::Path,
    data: &IdxDataset,
) -> anyhow::Result<qforget::eval::Evaluation> {
    Ok(qforget::eval::tract_ref::accuracy(model, data)?)
}

#[cfg(not(feature = "tract-engine"))]
fn tract_eval(_: &std::path::Path, _: &IdxDataset) -> anyhow::Result<qforget::eval::Evaluation> {
    anyhow::bail!("this build has no tract engine (rebuild with the `tract-engine` feature)")
}

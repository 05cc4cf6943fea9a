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
    pub norm: super::norm::NormArgs,
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
    // tract can run files qforget cannot import; it then gets the options' normalisation only.
    let graph = match qforget::onnx::load(&a.model) {
        Ok(mut g) => {
            a.norm.apply(&mut g)?;
            Some(g)
        }
        Err(_) if a.engine == Engine::Tract => None,
        Err(e) => return Err(e.into()),
    };
    let input = graph.as_ref().map(|g| g.input.shape);
    let data = IdxDataset::load_for(&a.dataset, a.split, input)?;
    let t0 = Instant::now();
    let ev = match (&graph, a.engine) {
        (Some(g), Engine::Qforget) => qforget::eval::accuracy(g, &data)?,
        (Some(g), Engine::Tract) => {
            qforget::eval::check_fits(g, &data)?;
            tract_eval(&a.model, &data, g.input.norm.clone())?
        }
        (None, _) => tract_eval(&a.model, &data, a.norm.resolve()?)?,
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
    norm: Option<qforget::graph::Normalization>,
) -> anyhow::Result<qforget::eval::Evaluation> {
    Ok(qforget::eval::tract_ref::accuracy(model, data, norm)?)
}

#[cfg(not(feature = "tract-engine"))]
fn tract_eval(
    _: &std::path::Path,
    _: &IdxDataset,
    _: Option<qforget::graph::Normalization>,
) -> anyhow::Result<qforget::eval::Evaluation> {
    anyhow::bail!("this build has no tract engine (rebuild with the `tract-engine` feature)")
}

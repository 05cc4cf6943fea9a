//! `qforget bench kernels [--json]` and `qforget bench infer MODEL --dataset DIR [--json]`:
//! speed measured on this machine, printed as text or JSON. Only timing and printing live here;
//! the products and the forward are the library's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;
use ndarray::{s, Array2, ArrayView2};
use qforget::data::{IdxDataset, Split};
use qforget::kernels::{self, PackedWeights};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// GOPS of every int8 kernel this CPU runs and of ndarray's f32 matmul, at 512³, on one
    /// thread and on all threads.
    Kernels {
        /// Print a JSON list of {name, threads, gops}.
        #[arg(long)]
        json: bool,
        /// Matrix size (m = n = k).
        #[arg(long, default_value_t = 512)]
        size: usize,
    },
    /// Images/s of qforget's int8 forward against tract on the same .onnx, and whether their
    /// predictions agree.
    Infer {
        /// Quantized .onnx model (input float32 NCHW, pixels = byte / 255, normalised).
        model: PathBuf,
        /// Dataset directory, any form `eval` takes (its test split is used).
        #[arg(long)]
        dataset: PathBuf,
        #[command(flatten)]
        norm: super::norm::NormArgs,
        /// Images to run (from the start of the test split).
        #[arg(long, default_value_t = 2000)]
        images: usize,
        /// Batch size, the same for both engines.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Kernels { json, size } => bench_kernels(size, json),
        BenchCommand::Infer {
            model,
            dataset,
            norm,
            images,
            batch,
            json,
        } => bench_infer(&model, &dataset, &norm, images, batch.max(1), json),
    }
}

#[derive(Serialize)]
struct Gops {
    name: String,
    threads: usize,
    gops: f64,
}

/// Seconds per call of `f`: one warm-up call, then calls until `budget` has passed (≥ 3).
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    let mut calls = 0u32;
    while calls < 3 || t0.elapsed() < budget {
        f();
        calls += 1;
    }
    t0.elapsed().as_secs_f64() / calls as f64
}

/// Seconds of the median pass of `pass`: one warm-up pass (it packs weight panels), then
/// passes until [`INFER_BUDGET`] has passed (at least 5). The median, not the mean: on a shared
/// machine one pass of a small model (tens of milliseconds) can double when another process
/// wakes, and a single timed pass made the ratio of two engines swing by a third run to run.
fn median_pass(mut pass: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    pass()?;
    let t0 = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || t0.elapsed() < INFER_BUDGET {
        let t = Instant::now();
        pass()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// How long `bench infer` keeps timing each engine's passes.
const INFER_BUDGET: Duration = Duration::from_secs(2);

fn pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?)
}

fn bench_kernels(size: usize, json: bool) -> anyhow::Result<()> {
    kernels::select()?;
    let (m, n, k) = (size, size, size);
    let ops = 2.0 * (m * n * k) as f64;
    let budget = Duration::from_millis(700);
    let all = rayon::current_num_threads();
    let thread_counts: Vec<usize> = if all > 1 { vec![1, all] } else { vec![1] };
    let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 251) as u8).collect();
    let b: Vec<i8> = (0..n * k).map(|i| (i * 53 % 256) as u8 as i8).collect();
    let w = PackedWeights::new(b, n, k);
    let mut rows = Vec::new();
    for kernel in kernels::available() {
        for &t in &thread_counts {
            let mut c = vec![0i32; m * n];
            let secs =
                pool(t)?.install(|| time_per_call(budget, || kernel.run(m, &a, 7, &w, &mut c)));
            rows.push(Gops {
                name: kernel.name.to_string(),
                threads: t,
                gops: ops / secs / 1e9,
            });
        }
    }
    let fa = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j) % 13) as f32 - 6.0);
    let fb = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j) % 11) as f32 - 5.0);
    for &t in &thread_counts {
        let secs = pool(t)?.install(|| {
            time_per_call(budget, || {
                std::hint::black_box(f32_matmul(&fa, &fb));
            })
        });
        rows.push(Gops {
            name: "ndarray-f32".to_string(),
            threads: t,
            gops: ops / secs / 1e9,
        });
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!(
            "{m}×{n}×{k} GEMM (active int8 kernel: {})",
            kernels::active().name
        );
        for r in &rows {
            println!(
                "{:<14} {:>2} thread(s) {:>8.1} GOPS",
                r.name, r.threads, r.gops
            );
        }
    }
    Ok(())
}

/// ndarray's f32 matmul, with output rows split over the current rayon pool the same way the
/// int8 kernels split theirs (ndarray itself runs on one thread).
fn f32_matmul(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
    let threads = rayon::current_num_threads();
    if threads == 1 {
        return a.dot(b);
    }
    let m = a.nrows();
    let rows = m.div_ceil(threads * 4).max(1);
    let mut c = Array2::<f32>::zeros((m, b.ncols()));
    let blocks: Vec<_> = c.axis_chunks_iter_mut(ndarray::Axis(0), rows).collect();
    blocks.into_par_iter().enumerate().for_each(|(i, mut cb)| {
        let r0 = i * rows;
        let ab: ArrayView2<f32> = a.slice(s![r0..r0 + cb.nrows(), ..]);
        cb.assign(&ab.dot(b));
    });
    c
}

#[derive(Serialize)]
struct InferReport {
    model: String,
    images: usize,
    batch: usize,
    kernel: &'static str,
    threads: usize,
    qforget_1_thread_images_per_s: f64,
    qforget_all_threads_images_per_s: f64,
    tract_images_per_s: f64,
    agree: usize,
    disagree: usize,
}

fn bench_infer(
    model: &Path,
    dataset: &Path,
    norm: &super::norm::NormArgs,
    images: usize,
    batch: usize,
    json: bool,
) -> anyhow::Result<()> {
    kernels::select()?;
    let mut graph = qforget::onnx::load(model)?;
    norm.apply(&mut graph)?;
    let data = IdxDataset::load_for(dataset, Split::Test, Some(graph.input.shape))?;
    qforget::eval::check_fits(&graph, &data)?;
    let n = images.min(data.n) / batch * batch;
    anyhow::ensure!(n > 0, "need at least one batch of {batch} images");
    let px = data.image_len();
    let bytes = &data.images[..n * px];

    let ours = |preds: &mut Vec<usize>| -> anyhow::Result<()> {
        preds.clear();
        for chunk in bytes.chunks(batch * px) {
            let logits = graph.forward(chunk, batch)?;
            preds.extend((0..batch).map(|i| logits.top1(i)));
        }
        Ok(())
    };
    let mut our_preds = Vec::with_capacity(n);
    let all = rayon::current_num_threads();
    let mut per_s = |t: usize| -> anyhow::Result<f64> {
        pool(t)?.install(|| Ok(n as f64 / median_pass(|| ours(&mut our_preds))?))
    };
    let ours_1 = per_s(1)?;
    let ours_all = per_s(all)?;

    let (tract_per_s, tract_preds) = tract_predictions(
        model,
        &graph,
        bytes,
        batch,
        [data.channels, data.rows, data.cols],
    )?;
    let agree = our_preds
        .iter()
        .zip(&tract_preds)
        .filter(|(a, b)| a == b)
        .count();
    let r = InferReport {
        model: model.display().to_string(),
        images: n,
        batch,
        kernel: kernels::active().name,
        threads: all,
        qforget_1_thread_images_per_s: ours_1,
        qforget_all_threads_images_per_s: ours_all,
        tract_images_per_s: tract_per_s,
        agree,
        disagree: n - agree,
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: {} images, batch {}, kernel {}\n  qforget  1 thread  {:>9.0} images/s\n  qforget {:>2} threads {:>9.0} images/s\n  tract             {:>9.0} images/s\n  predictions agree on {}/{} images",
            r.model, n, batch, r.kernel, ours_1, all, ours_all, tract_per_s, agree, n
        );
    }
    Ok(())
}

/// tract's images/s (its median pass, [`median_pass`]) and its top-1 predictions.
#[cfg(feature = "tract-engine")]
fn tract_predictions(
    model: &Path,
    graph: &qforget::graph::Graph,
    bytes: &[u8],
    batch: usize,
    chw: [usize; 3],
) -> anyhow::Result<(f64, Vec<usize>)> {
    let m = qforget::eval::tract_ref::TractModel::load(model, batch, chw)?
        .with_normalization(graph.input.norm.clone());
    let px = chw.iter().product::<usize>();
    let mut preds = Vec::new();
    let pass = |preds: &mut Vec<usize>| -> anyhow::Result<()> {
        preds.clear();
        for chunk in bytes.chunks(batch * px) {
            let out = m.run(chunk)?;
            let classes = out.len() / batch;
            preds.extend(out.chunks(classes).map(qforget::eval::argmax));
        }
        Ok(())
    };
    let secs = median_pass(|| pass(&mut preds))?;
    let n = bytes.len() / px;
    Ok((n as f64 / secs, preds))
}

#[cfg(not(feature = "tract-engine"))]
fn tract_predictions(
    _: &Path,
    _: &qforget::graph::Graph,
    _: &[u8],
    _: usize,
    _: [usize; 3],
) -> anyhow::Result<(f64, Vec<usize>)> {
    anyhow::bail!("this build has no tract engine (rebuild with the `tract-engine` feature)")
}

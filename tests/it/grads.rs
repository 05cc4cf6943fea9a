//! Backward checks.
//!
//! - Every layer family (the small graphs of `layers.rs`, and the fixture models) against
//!   central finite differences of the float twin: weights, biases and the input gradient (the
//!   latter covers pools, Clip and Add, which have no parameters). Budget: the float twin is
//!   piecewise linear (ReLU, max), so a difference that straddles a kink may disagree; at least
//!   90 % of sampled coordinates must agree within 2 % of the gradient's scale, and the sampled
//!   vectors must have cosine ≥ 0.99.
//! - The int8 backward against the f32 backward on the same integer forward (fixtures, a real
//!   cross-entropy batch). Budget: cosine ≥ 0.99 over all parameters and ≥ 0.95 per tensor.

use qforget::graph::{GradPath, Graph, Shadow};

/// A fixed pseudo-random ±1 weighting of the logits: L = Σ r·z, ∂L/∂z = r.
fn weights_r(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64).wrapping_mul(0x9e3779b97f4a7c15) >> 60;
            h as f32 / 8.0 - 1.0
        })
        .collect()
}

fn loss(g: &Graph, x0: &[f32], sh: &Shadow, r: &[f32]) -> f64 {
    let acts = g
        .forward_float_input(x0.to_vec(), &sh.real_params(g))
        .unwrap();
    let z = acts[g.output].as_ref().unwrap();
    z.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Finite-difference check of the float twin's backward on `images`.
pub fn fd_check(name: &str, g: &Graph, images: &[u8], n: usize) {
    let sh = Shadow::new(g);
    let q = g.quantize_images(images, n).unwrap();
    let x0 = qforget::graph::float_seg::real_values(&g.acts[g.input.act], &q).into_owned();
    let params = sh.real_params(g);
    let tape = qforget::graph::Tape::Float(g.forward_float_input(x0.clone(), &params).unwrap());
    let r = weights_r(n * g.classes());
    let (grads, gin) = g
        .backward_full(&tape, &params, &r, GradPath::F32, true, false)
        .unwrap();
    let an = sh.gather(g, &grads);
    let gin = gin.expect("input gradient");
    let (mut pass, mut total) = (0usize, 0usize);
    let (mut dot, mut na, mut nf) = (0f64, 0f64, 0f64);
    let mut check = |analytic: f64, numeric: f64, scale: f64| {
        total += 1;
        if (analytic - numeric).abs() <= 0.02 * scale + 1e-6 {
            pass += 1;
        } else if std::env::var_os("QFORGET_FD_VERBOSE").is_some() {
            eprintln!("  analytic {analytic:.6e} numeric {numeric:.6e} scale {scale:.3e}");
        }
        dot += analytic * numeric;
        na += analytic * analytic;
        nf += numeric * numeric;
    };
    // Parameters: up to 12 coordinates per tensor.
    for s in &sh.segments {
        let seg = &an[s.range.clone()];
        let scale = seg.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let mag = sh.theta[s.range.clone()]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(1e-3);
        let h = 2e-3 * mag;
        let step = (seg.len() / 12).max(1);
        for j in (s.range.clone()).step_by(step).take(12) {
            let mut p = sh.clone();
            p.theta[j] += h;
            let up = loss(g, &x0, &p, &r);
            p.theta[j] -= 2.0 * h;
            let down = loss(g, &x0, &p, &r);
            check(an[j] as f64, (up - down) / (2.0 * h as f64), scale);
        }
    }
    // Input: up to 24 coordinates.
    let scale = gin.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let h = 1e-3;
    let step = (x0.len() / 24).max(1);
    for j in (0..x0.len()).step_by(step).take(24) {
        let mut x = x0.clone();
        x[j] += h;
        let up = loss(g, &x, &sh, &r);
        x[j] -= 2.0 * h;
        let down = loss(g, &x, &sh, &r);
        check(gin[j] as f64, (up - down) / (2.0 * h as f64), scale);
    }
    let cos = dot / (na.sqrt() * nf.sqrt()).max(1e-30);
    if na + nf == 0.0 {
        // residual_add: relu(x − 1.5x) of non-negative pixels is 0 everywhere; its Add is
        // covered by the residual fixtures below.
        eprintln!("{name}: no gradient reaches the parameters or the input (output clamped)");
    }
    eprintln!(
        "{name}: finite differences: {pass}/{total} coordinates within budget, cosine {cos:.5}"
    );
    assert!(
        pass as f64 >= 0.9 * total as f64 && (cos >= 0.99 || na + nf == 0.0),
        "{name}: {pass}/{total} within budget, cosine {cos}"
    );
}

fn fixture(name: &str) -> (Graph, qforget::data::IdxDataset) {
    let g = qforget::onnx::load(super::model(name)).unwrap();
    let set = if name.starts_with("fmnist") {
        "fashion-mnist"
    } else {
        "mnist"
    };
    let d =
        qforget::data::IdxDataset::load(super::dataset(set), qforget::data::Split::Train).unwrap();
    (g, d)
}

#[test]
fn fixtures_backward_matches_finite_differences() {
    for name in [
        "fmnist_cnn_qdq.onnx",
        "fmnist_cnn_bn_qdq.onnx",
        "fmnist_cnn_relu6_qdq.onnx",
        "mnist_res_s8.onnx",
        "mnist_mlp_matmul_qdq.onnx",
        "mnist_res_qop_u8.onnx",
        // float HardSwish/LeakyRelu/Sigmoid lookup layers
        "mnist_act_qdq.onnx",
        // SiLU and GELU: products of two chains of one input, Erf
        "mnist_gelu_qdq.onnx",
        // LayerNormalization in float between Q/DQ pairs
        "mnist_ln_qdq.onnx",
        // the same spelled out at opset 13: per-sample broadcasts, Pow, Sqrt, feature means
        "mnist_ln13_qdq.onnx",
    ] {
        fd_fixture(name);
    }
}

/// [`fd_check`] of a fixture on random images (not real ones: the flat background of a real
/// digit gives equal values in a max window, a tie where the float twin has no derivative).
pub fn fd_fixture(name: &str) {
    let (g, _) = fixture(name);
    let n = 3;
    let mut state = 0x2545f4914f6cdd1du64 ^ name.len() as u64;
    let images: Vec<u8> = (0..n * 784)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    fd_check(name, &g, &images, n);
}

/// NNCF's MobileNetV2: depthwise convs reading activations quantized per channel, their
/// producers' float biases turned into per-channel offsets (`graph::channel_act`).
#[test]
fn per_channel_activation_fixture_backward_matches_finite_differences() {
    fd_fixture("fmnist_mnv2_nncf.onnx");
}

/// NNCF's preset MIXED on the MobileNetV3-style net: per-channel zero points keep the
/// depthwise convs' inputs in float (a QuantizeLinear → DequantizeLinear function, straight
/// through inside its range).
#[test]
fn per_channel_zero_point_fixture_backward_matches_finite_differences() {
    fd_fixture("mnist_mnv3_nncf_mixed.onnx");
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

#[test]
fn int8_backward_agrees_with_f32_backward() {
    for name in [
        "fmnist_cnn_qdq.onnx",
        "mnist_res_s8.onnx",
        "mnist_mlp_matmul_qdq.onnx",
        "fmnist_cnn_qop.onnx",
        "fmnist_cat_qdq.onnx",
    ] {
        let (g, d) = fixture(name);
        let n = 64;
        let sh = Shadow::new(&g);
        assert!(!sh.is_empty(), "{name}: nothing trainable");
        let tape = g.forward_tape(&d.images[..n * 784], n).unwrap();
        let z = g.tape_logits(&tape);
        let (_, dz) = qforget::train::loss::cross_entropy(&z, g.classes(), &d.labels[..n]);
        let params = g.real_params();
        let f = sh.gather(&g, &g.backward(&tape, &params, &dz, GradPath::F32).unwrap());
        let i = sh.gather(
            &g,
            &g.backward(&tape, &params, &dz, GradPath::Int8).unwrap(),
        );
        let total = cosine(&f, &i);
        let mut worst = 1f64;
        for s in &sh.segments {
            worst = worst.min(cosine(&f[s.range.clone()], &i[s.range.clone()]));
        }
        eprintln!(
            "{name}: int8 vs f32 backward: cosine {total:.5} overall, worst tensor {worst:.5}"
        );
        assert!(total >= 0.99 && worst >= 0.95, "{name}: {total} / {worst}");
    }
}

/// The f32 backward gives the same bits on one thread as on three: its conv weight gradients
/// are added up in image order, not in whatever pieces rayon's work stealing cut the batch into
/// (before, the same forget request on the float-conv fixture exported different bytes from run
/// to run).
#[test]
fn f32_backward_does_not_depend_on_the_thread_count() {
    for name in ["fmnist_cnn_conv2float_qdq.onnx", "fmnist_cnn_qdq.onnx"] {
        let (g, d) = fixture(name);
        let n = 64;
        let sh = Shadow::new(&g);
        let tape = g.forward_tape(&d.images[..n * 784], n).unwrap();
        let z = g.tape_logits(&tape);
        let (_, dz) = qforget::train::loss::cross_entropy(&z, g.classes(), &d.labels[..n]);
        let params = g.real_params();
        let grads = |threads: usize| -> Vec<u32> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let b = g.backward(&tape, &params, &dz, GradPath::F32).unwrap();
                sh.gather(&g, &b).iter().map(|v| v.to_bits()).collect()
            })
        };
        let one = grads(1);
        assert!(one.iter().any(|&b| b != 0), "{name}: all gradients zero");
        for _ in 0..3 {
            assert_eq!(grads(3), one, "{name}: 3 threads differ from 1");
        }
    }
}

/// The optimizer's coordinates (`graph::metric`): on the fixture that kept its BatchNormalization
/// as layers of their own, each value of a conv followed by one trains in `φ = f_c·θ`, `f_c` the
/// BN layer's real factor of its channel (the folded conv's weights); every other value keeps
/// `D = 1`, and a model without such layers has no factors at all (it trains as before).
#[test]
fn kept_batchnorm_sets_the_optimizer_coordinates() {
    let (g, _) = fixture("fmnist_cnn_bn_qdq.onnx");
    let sh = Shadow::new(&g);
    assert_eq!(sh.metric.len(), sh.theta.len());
    let mut scaled = 0;
    for seg in &sh.segments {
        let next = g
            .layers
            .iter()
            .find(|l| l.inputs.contains(&g.layers[seg.layer].output));
        let bn = match next.map(|l| (&l.op, &l.name)) {
            Some((qforget::graph::Op::Conv(c), name)) if name.contains("BatchNormalization") => c,
            _ => {
                assert!(
                    sh.metric[seg.range.clone()].iter().all(|&m| m == 1.0),
                    "{}: factors without a BatchNorm after it",
                    seg.initializer
                );
                continue;
            }
        };
        let per = seg.range.len() / bn.out_shape.c;
        for (k, &m) in sh.metric[seg.range.clone()].iter().enumerate() {
            let c = k / per;
            let f = (bn.weights[c].data[0] as f32 * bn.scale_of(c)).abs();
            assert_eq!(m, f, "{} value {k}", seg.initializer);
        }
        scaled += seg.range.len();
    }
    // conv1 (16×9 weights) and conv2 (32×144) are followed by their BatchNorm layers.
    assert!(scaled >= 16 * 9 + 32 * 144, "{scaled} values scaled");
    for stem in [
        "fmnist_cnn_qdq.onnx",
        "mnist_res_s8.onnx",
        "fmnist_mnv2_qdq.onnx",
    ] {
        let (g, _) = fixture(stem);
        assert!(Shadow::new(&g).metric.is_empty(), "{stem}");
    }
}

/// int8 against f32 backward on a real cross-entropy batch: cosine over all parameters and the
/// worst per tensor.
pub fn int8_vs_f32(name: &str) -> (f64, f64) {
    let (g, d) = fixture(name);
    let n = 64;
    let sh = Shadow::new(&g);
    let tape = g.forward_tape(&d.images[..n * 784], n).unwrap();
    let (z, unclamped) = g.loss_logits(&tape);
    let (_, dz) = qforget::train::loss::cross_entropy(&z, g.classes(), &d.labels[..n]);
    let params = g.real_params();
    let grads = |path| {
        let lg = g
            .backward_full(&tape, &params, &dz, path, false, unclamped)
            .unwrap()
            .0;
        sh.gather(&g, &lg)
    };
    let (f, i) = (grads(GradPath::F32), grads(GradPath::Int8));
    let worst = sh
        .segments
        .iter()
        .map(|s| cosine(&f[s.range.clone()], &i[s.range.clone()]))
        .fold(1f64, f64::min);
    (cosine(&f, &i), worst)
}

/// NNCF's MobileNetV2, whose depthwise convs read activations quantized per channel, against
/// the same network quantized by onnxruntime with per-tensor activations: the int8 backward
/// agrees with the f32 one (which dequantizes the saved input per channel) as well on the
/// per-channel model as on its per-tensor sibling. A MobileNetV2's depthwise layers have 9
/// weights per channel and gradients of a wide range, which the int8 path quantizes per tensor,
/// so both sit below the plain CNNs' 0.99; the per-channel scales themselves are checked
/// exactly in `graph::depthwise`'s tests.
#[test]
fn int8_backward_on_per_channel_activations_agrees_like_its_per_tensor_sibling() {
    let (nncf, nncf_worst) = int8_vs_f32("fmnist_mnv2_nncf.onnx");
    let (ort, ort_worst) = int8_vs_f32("fmnist_mnv2_qdq.onnx");
    eprintln!(
        "int8 vs f32 backward: fmnist_mnv2_nncf cosine {nncf:.5} overall, worst tensor {nncf_worst:.5}; fmnist_mnv2_qdq {ort:.5}, {ort_worst:.5}"
    );
    assert!(nncf >= 0.98 && nncf >= ort - 0.01, "{nncf} vs {ort}");
    assert!(
        nncf_worst >= 0.9 && nncf_worst >= ort_worst - 0.05,
        "{nncf_worst} vs {ort_worst}"
    );
}

//! Float segment ops beyond layers, ReLU and MaxPool (issue 10, item 2): the Add of two float
//! results (a residual Add in float), a float GlobalAveragePool and AveragePool, float
//! element-wise functions (LeakyRelu, Sigmoid, Tanh) and the Mul of two tensors (a
//! squeeze-excitation gate), a spatial ReduceMean, on built graphs against the ONNX definition computed here in f64,
//! with the backward through them checked against finite differences. The committed fixture
//! with a float residual Add and GlobalAveragePool (`mnist_res_convonly_qdq`) is checked with
//! the other float-segment fixtures (`float_runs.rs`, `float_heads.rs`).

use std::path::Path;

use super::onnx_builder::{Rng, A, B};

/// f64 2-D convolution of NCHW `x` `[ci][h][h]`, weights `[co][ci][k][k]`, bias, padding
/// `pad`, stride 1.
#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f64],
    ci: usize,
    h: usize,
    w: &[f32],
    b: &[f32],
    co: usize,
    k: usize,
    pad: usize,
) -> Vec<f64> {
    let oh = h + 2 * pad + 1 - k;
    let mut y = vec![0f64; co * oh * oh];
    for o in 0..co {
        for oy in 0..oh {
            for ox in 0..oh {
                let mut v = b[o] as f64;
                for c in 0..ci {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (oy + ky, ox + kx);
                            if iy < pad || ix < pad || iy - pad >= h || ix - pad >= h {
                                continue;
                            }
                            let xv = x[c * h * h + (iy - pad) * h + ix - pad];
                            v += w[((o * ci + c) * k + ky) * k + kx] as f64 * xv;
                        }
                    }
                }
                y[o * oh * oh + oy * oh + ox] = v;
            }
        }
    }
    y
}

#[test]
fn a_float_residual_add_pools_functions_and_a_gate_follow_onnx() {
    // x [N,2,4,4] → Q/DQ → ConvA (float, pad 1) → Relu = r; ConvB(r) → LeakyRelu = t;
    // s = Add(r, t); gate = Sigmoid(Conv1x1(GlobalAveragePool(s))); m = Tanh(Mul(s, gate));
    // AveragePool 2×2 / 2 → Flatten → Gemm → float logits.
    let (ci, h, c) = (2, 4, 3);
    let mut b = B::new(ci, h, h);
    let s_in = 1.0 / 255.0;
    let x = b.qdq("x", s_in, 0, false);
    let mut r = Rng(0xf0a5);
    let mut rand = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| r.float(-a, a)).collect() };
    let (wa, ba) = (rand(c * ci * 9, 0.5), rand(c, 0.2));
    let (wb, bb) = (rand(c * c * 9, 0.4), rand(c, 0.2));
    let (wg, bg) = (rand(c * c, 0.8), rand(c, 0.3));
    let (wf, bf) = (rand(5 * c * 4, 0.6), rand(5, 0.1));
    let kern = |k: i64, p: i64| {
        vec![
            ("kernel_shape", A::Is(vec![k, k])),
            ("pads", A::Is(vec![p, p, p, p])),
        ]
    };
    let (wan, ban) = (b.f32s(&[c, ci, 3, 3], &wa), b.f32s(&[c], &ba));
    let ca = b.node("Conv", &[&x, &wan, &ban], kern(3, 1));
    let rl = b.node("Relu", &[&ca], vec![]);
    let (wbn, bbn) = (b.f32s(&[c, c, 3, 3], &wb), b.f32s(&[c], &bb));
    let cb = b.node("Conv", &[&rl, &wbn, &bbn], kern(3, 1));
    let t = b.node("LeakyRelu", &[&cb], vec![("alpha", A::F(0.1))]);
    let s = b.node("Add", &[&rl, &t], vec![]);
    let gp = b.node("GlobalAveragePool", &[&s], vec![]);
    let (wgn, bgn) = (b.f32s(&[c, c, 1, 1], &wg), b.f32s(&[c], &bg));
    let gc = b.node("Conv", &[&gp, &wgn, &bgn], kern(1, 0));
    let gate = b.node("Sigmoid", &[&gc], vec![]);
    let m = b.node("Mul", &[&s, &gate], vec![]);
    let th = b.node("Tanh", &[&m], vec![]);
    let ap = b.node(
        "AveragePool",
        &[&th],
        vec![
            ("kernel_shape", A::Is(vec![2, 2])),
            ("strides", A::Is(vec![2, 2])),
        ],
    );
    let fl = b.node("Flatten", &[&ap], vec![]);
    let (wfn, bfn) = (b.f32s(&[5, c * 4], &wf), b.f32s(&[5], &bf));
    let out = b.node("Gemm", &[&fl, &wfn, &bfn], vec![("transB", A::I(1))]);
    let g = qforget::onnx::import(&b.model(&out), Path::new("float_ops.onnx")).unwrap();
    let kinds: Vec<&str> = g.layers.iter().map(|l| l.op.kind()).collect();
    eprintln!("float ops graph: {kinds:?}");
    assert!(g.real_output);
    for k in ["add", "global_avgpool", "mul", "pointwise", "avgpool"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let n = 6;
    let len = ci * h * h;
    let images: Vec<u8> = (0..n * len).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, n).unwrap();
    let mut worst = 0f64;
    for i in 0..n {
        let xs: Vec<f64> = images[i * len..(i + 1) * len]
            .iter()
            .map(|&p| ((p as f64 / 255.0) / s_in as f64).round() * s_in as f64)
            .collect();
        let rr: Vec<f64> = conv(&xs, ci, h, &wa, &ba, c, 3, 1)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let tt: Vec<f64> = conv(&rr, c, h, &wb, &bb, c, 3, 1)
            .into_iter()
            .map(|v| if v >= 0.0 { v } else { 0.1 * v })
            .collect();
        let ss: Vec<f64> = rr.iter().zip(&tt).map(|(a, b)| a + b).collect();
        let pooled: Vec<f64> = (0..c)
            .map(|k| ss[k * 16..(k + 1) * 16].iter().sum::<f64>() / 16.0)
            .collect();
        let gt: Vec<f64> = conv(&pooled, c, 1, &wg, &bg, c, 1, 0)
            .into_iter()
            .map(|v| 1.0 / (1.0 + (-v).exp()))
            .collect();
        let mm: Vec<f64> = (0..c * 16).map(|j| (ss[j] * gt[j / 16]).tanh()).collect();
        let mut avg = vec![0f64; c * 4];
        for k in 0..c {
            for py in 0..2 {
                for px in 0..2 {
                    let mut v = 0.0;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        v += mm[k * 16 + (2 * py + dy) * 4 + 2 * px + dx];
                    }
                    avg[k * 4 + py * 2 + px] = v / 4.0;
                }
            }
        }
        let want: Vec<f64> = (0..5)
            .map(|o| {
                (0..c * 4)
                    .map(|j| wf[o * c * 4 + j] as f64 * avg[j])
                    .sum::<f64>()
                    + bf[o] as f64
            })
            .collect();
        let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        for (a, e) in got.real_row(i).iter().zip(&want) {
            worst = worst.max((*a as f64 - e).abs() / scale);
        }
    }
    eprintln!(
        "float Add → GAP → gate Mul → Tanh → AveragePool: max relative |Δ| {worst:.2e} against f64"
    );
    assert!(worst < 1e-5, "{worst}");
    super::grads::fd_check("float_ops", &g, &images, n);
    // The training backward (integer forward's tape, real values of the float activations)
    // agrees with the float twin's: every activation after the input is float here.
    use qforget::graph::{GradPath, Shadow};
    let sh = Shadow::new(&g);
    let params = sh.real_params(&g);
    let dz: Vec<f32> = (0..n * 5)
        .map(|k| ((k * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let tq = g.forward_tape(&images, n).unwrap();
    let tf = g.forward_float_tape(&images, n, &params).unwrap();
    let gq = g.backward(&tq, &params, &dz, GradPath::F32).unwrap();
    let gf = g.backward(&tf, &params, &dz, GradPath::F32).unwrap();
    let (mut diff, mut mag) = (0f32, 0f32);
    for (a, b) in gq.iter().zip(&gf) {
        if let (Some(a), Some(b)) = (a, b) {
            for (p, q) in a.dw.iter().chain(&a.db).zip(b.dw.iter().chain(&b.db)) {
                diff = diff.max((p - q).abs());
                mag = mag.max(q.abs());
            }
        }
    }
    eprintln!("integer-tape vs float-twin gradients: max |Δ| {diff:.2e} (max |g| {mag:.2e})");
    assert!(mag > 0.0 && diff <= 1e-4 * mag, "{diff} vs {mag}");
}

#[test]
fn a_spatial_reduce_mean_of_a_float_value_is_a_global_average() {
    // x [N,1,4,4] → Q/DQ → Conv(float [2,1,3,3], pad 1) → Relu → ReduceMean(axes [2, 3]) →
    // Flatten → Gemm → Softmax (the model's last node: the graph ends at the logits).
    let mut b = B::new(1, 4, 4);
    let s_in = 1.0 / 255.0;
    let x = b.qdq("x", s_in, 0, false);
    let mut r = Rng(0x4ed5);
    let wc: Vec<f32> = (0..18).map(|_| r.float(-0.6, 0.6)).collect();
    let bc = [0.05f32, -0.1];
    let wf: Vec<f32> = (0..6).map(|_| r.float(-1.0, 1.0)).collect();
    let (wcn, bcn) = (b.f32s(&[2, 1, 3, 3], &wc), b.f32s(&[2], &bc));
    let c = b.node(
        "Conv",
        &[&x, &wcn, &bcn],
        vec![
            ("kernel_shape", A::Is(vec![3, 3])),
            ("pads", A::Is(vec![1, 1, 1, 1])),
        ],
    );
    let rl = b.node("Relu", &[&c], vec![]);
    let m = b.node("ReduceMean", &[&rl], vec![("axes", A::Is(vec![2, 3]))]);
    let f = b.node("Flatten", &[&m], vec![]);
    let wfn = b.f32s(&[3, 2], &wf);
    let z = b.node("Gemm", &[&f, &wfn], vec![("transB", A::I(1))]);
    let sm = b.node("Softmax", &[&z], vec![("axis", A::I(1))]);
    let g = qforget::onnx::import(&b.model(&sm), Path::new("reduce_mean.onnx")).unwrap();
    let kinds: Vec<&str> = g.layers.iter().map(|l| l.op.kind()).collect();
    assert_eq!(kinds, ["float_conv", "global_avgpool", "dense"]);
    let n = 4;
    let images: Vec<u8> = (0..n * 16).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, n).unwrap();
    for i in 0..n {
        let xs: Vec<f64> = images[i * 16..(i + 1) * 16]
            .iter()
            .map(|&p| ((p as f64 / 255.0) / s_in as f64).round() * s_in as f64)
            .collect();
        let y = conv(&xs, 1, 4, &wc, &bc, 2, 3, 1);
        let mean: Vec<f64> = (0..2)
            .map(|k| {
                y[k * 16..(k + 1) * 16]
                    .iter()
                    .map(|v| v.max(0.0))
                    .sum::<f64>()
                    / 16.0
            })
            .collect();
        for (o, a) in got.real_row(i).iter().enumerate() {
            let e = wf[o * 2] as f64 * mean[0] + wf[o * 2 + 1] as f64 * mean[1];
            assert!(
                (*a as f64 - e).abs() <= 1e-5 * e.abs().max(1.0),
                "{a} vs {e}"
            );
        }
    }
    super::grads::fd_check("reduce_mean", &g, &images, n);
    // Over the channels: refused by name.
    let mut b = B::new(2, 2, 2);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let m = b.node("ReduceMean", &[&x], vec![("axes", A::Is(vec![1]))]);
    let y = b.qdq(&m, 0.01, 0, false);
    let err = qforget::onnx::import(&b.model(&y), Path::new("reduce_c.onnx"))
        .unwrap_err()
        .to_string();
    for part in ["reduce_c.onnx", "ReduceMean", "node_ReduceMean", "[1]"] {
        assert!(err.contains(part), "{err}");
    }
}

#[test]
fn float_ops_that_stay_unsupported_are_refused_by_name() {
    // (The Sub and Div of two tensors are supported since, see sub_div.rs, which checks their
    // refusals.) An Add of float tensors of different shapes.
    let mut b = B::new(1, 2, 2);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let f = b.node("Flatten", &[&x], vec![]);
    let w1 = b.f32s(&[3, 4], &[0.1; 12]);
    let g1 = b.node("Gemm", &[&f, &w1], vec![("transB", A::I(1))]);
    let w2 = b.f32s(&[2, 4], &[0.2; 8]);
    let g2 = b.node("Gemm", &[&f, &w2], vec![("transB", A::I(1))]);
    let a = b.node("Add", &[&g1, &g2], vec![]);
    let err = qforget::onnx::import(&b.model(&a), Path::new("add_shapes.onnx"))
        .unwrap_err()
        .to_string();
    for part in ["add_shapes.onnx", "Add", "node_Add", "equal shapes"] {
        assert!(err.contains(part), "{err}");
    }
}

//! Importer per op family and forward per layer, against the ONNX semantics computed in f64
//! (`onnx_builder`): small QDQ/QOperator graphs built node by node as onnxruntime's quantizer
//! writes them, run through qforget's importer and integer forward. Float and integer paths may
//! differ at exact rounding ties, so the budget is: every value within 1 LSB, and at least
//! 97 % identical (a systematic error — wrong rounding, zero point, layout — fails the latter).

use std::path::Path;

use super::onnx_builder::{conv, fq, pool, quant, Rng, A, B, T};

const N: usize = 8;

/// Import `b` with output `out`, run `N` random images and compare with `reference`.
fn check(name: &str, b: &B, out: &str, reference: impl Fn(&T) -> Vec<i32>) {
    let g = qforget::onnx::import(&b.model(out), Path::new(&format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let [c, h, w] = [0, 1, 2].map(|i| b.input_dims[i] as usize);
    let mut rng = Rng(0x9e3779b97f4a7c15 ^ name.len() as u64);
    let images: Vec<u8> = (0..N * c * h * w).map(|_| rng.int(0, 255) as u8).collect();
    let logits = g.forward(&images, N).unwrap();
    super::grads::fd_check(name, &g, &images, N);
    let (mut max_d, mut exact, mut total) = (0, 0, 0);
    for i in 0..N {
        let img = &images[i * c * h * w..(i + 1) * c * h * w];
        let x = T {
            c,
            h,
            w,
            v: img.iter().map(|&p| (p as f32 / 255.0) as f64).collect(),
        };
        let want = reference(&x);
        let got = logits.model_row(i);
        assert_eq!(got.len(), want.len(), "{name}: output size");
        for (a, b) in got.iter().zip(&want) {
            max_d = max_d.max((a - b).abs());
            exact += (a == b) as usize;
            total += 1;
        }
    }
    let share = exact as f64 / total as f64;
    eprintln!(
        "{name}: {total} values, max |Δ| {max_d}, {:.2} % exact",
        100.0 * share
    );
    assert!(
        max_d <= 1 && share >= 0.97,
        "{name}: max |Δ| {max_d}, exact {share}"
    );
}

struct ConvCase {
    c: usize,
    hw: (usize, usize),
    co: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    dil: usize,
    group: usize,
    per_channel: bool,
    signed: bool,
    relu: bool,
}

fn conv_case(name: &str, cc: ConvCase) {
    let mut rng = Rng(42 + cc.co as u64);
    let cig = cc.c / cc.group;
    let wq: Vec<i8> = (0..cc.co * cig * cc.k * cc.k)
        .map(|_| rng.int(-127, 127) as i8)
        .collect();
    let ns = if cc.per_channel { cc.co } else { 1 };
    let ws: Vec<f32> = (0..ns).map(|_| rng.float(0.002, 0.02)).collect();
    let (s_in, z_in) = if cc.signed {
        (1.0 / 255.0, -128)
    } else {
        (1.0 / 255.0, 0)
    };
    let (s_out, z_out) = (
        rng.float(0.01, 0.05),
        if cc.relu {
            if cc.signed {
                -128
            } else {
                0
            }
        } else if cc.signed {
            -5
        } else {
            120
        },
    );
    let bq: Vec<i32> = (0..cc.co).map(|_| rng.int(-2000, 2000) as i32).collect();
    let bs: Vec<f32> = (0..cc.co)
        .map(|o| s_in * ws[if cc.per_channel { o } else { 0 }])
        .collect();

    let mut b = B::new(cc.c, cc.hw.0, cc.hw.1);
    let x = b.qdq("x", s_in, z_in, cc.signed);
    let w = b.dq_weights(&[cc.co, cig, cc.k, cc.k], &wq, &ws, 0);
    let bias = b.dq_bias(&bq, &bs);
    let k = cc.k as i64;
    let p = cc.pads.map(|v| v as i64);
    let y = b.node(
        "Conv",
        &[&x, &w, &bias],
        vec![
            ("kernel_shape", A::Is(vec![k, k])),
            ("strides", A::Is(vec![cc.stride as i64; 2])),
            ("pads", A::Is(p.to_vec())),
            ("dilations", A::Is(vec![cc.dil as i64; 2])),
            ("group", A::I(cc.group as i64)),
        ],
    );
    let y = if cc.relu {
        b.node("Relu", &[&y], vec![])
    } else {
        y
    };
    let y = b.qdq(&y, s_out, z_out, cc.signed);
    let out = b.node("Flatten", &[&y], vec![("axis", A::I(1))]);
    check(name, &b, &out, |x| {
        let xd = x.map(|v| fq(v, s_in, z_in, cc.signed));
        let wf: Vec<f64> = wq
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                q as f64
                    * ws[if cc.per_channel {
                        i / (cig * cc.k * cc.k)
                    } else {
                        0
                    }] as f64
            })
            .collect();
        let bf: Vec<f64> = bq
            .iter()
            .zip(&bs)
            .map(|(&q, &s)| q as f64 * s as f64)
            .collect();
        let y = conv(
            &xd,
            &wf,
            cc.co,
            [cc.k, cc.k],
            cc.stride,
            cc.pads,
            cc.dil,
            cc.group,
            &bf,
        );
        y.v.iter()
            .map(|&v| {
                quant(
                    if cc.relu { v.max(0.0) } else { v },
                    s_out,
                    z_out,
                    cc.signed,
                )
            })
            .collect()
    });
}

#[test]
fn conv_per_channel_u8_stride_pads_dilation_relu() {
    conv_case(
        "conv_u8",
        ConvCase {
            c: 3,
            hw: (11, 9),
            co: 5,
            k: 3,
            stride: 2,
            pads: [1, 0, 2, 1],
            dil: 2,
            group: 1,
            per_channel: true,
            signed: false,
            relu: true,
        },
    );
}

#[test]
fn conv_grouped_per_tensor_s8() {
    conv_case(
        "conv_group_s8",
        ConvCase {
            c: 4,
            hw: (7, 8),
            co: 6,
            k: 3,
            stride: 1,
            pads: [1, 1, 1, 1],
            dil: 1,
            group: 2,
            per_channel: false,
            signed: true,
            relu: false,
        },
    );
}

#[test]
fn conv_depthwise_5x5() {
    conv_case(
        "conv_depthwise",
        ConvCase {
            c: 3,
            hw: (10, 10),
            co: 3,
            k: 5,
            stride: 1,
            pads: [2, 2, 2, 2],
            dil: 1,
            group: 3,
            per_channel: true,
            signed: false,
            relu: true,
        },
    );
}

/// Gemm (transB 0 and 1) and MatMul + Add bias on a flattened input.
#[test]
fn linear_forms() {
    for form in ["gemm_t", "gemm_n", "matmul_add"] {
        let (c, h, w, out_f) = (2, 4, 5, 7);
        let inf = c * h * w;
        let mut rng = Rng(7);
        let wq: Vec<i8> = (0..inf * out_f).map(|_| rng.int(-127, 127) as i8).collect();
        let ws: Vec<f32> = (0..out_f).map(|_| rng.float(0.002, 0.01)).collect();
        let bias_f: Vec<f32> = (0..out_f).map(|_| rng.float(-0.3, 0.3)).collect();
        let (s_in, s_out, z_out) = (1.0 / 255.0, 0.02, 100);
        let mut b = B::new(c, h, w);
        let x = b.qdq("x", s_in, 0, false);
        let x = b.node("Flatten", &[&x], vec![("axis", A::I(1))]);
        // weight element (o, i)
        let wf = |o: usize, i: usize, wq: &[i8]| -> f64 {
            let v = if form == "gemm_t" {
                wq[o * inf + i]
            } else {
                wq[i * out_f + o]
            };
            v as f64 * ws[o] as f64
        };
        let y = match form {
            "gemm_t" | "gemm_n" => {
                let t = form == "gemm_t";
                let dims = if t { [out_f, inf] } else { [inf, out_f] };
                let wn = b.dq_weights(&dims, &wq, &ws, if t { 0 } else { 1 });
                let bq: Vec<i32> = bias_f
                    .iter()
                    .zip(&ws)
                    .map(|(v, s)| (v / (s_in * s)).round() as i32)
                    .collect();
                let bs: Vec<f32> = ws.iter().map(|s| s_in * s).collect();
                let bn = b.dq_bias(&bq, &bs);
                b.node("Gemm", &[&x, &wn, &bn], vec![("transB", A::I(t as i64))])
            }
            _ => {
                let wn = b.dq_weights(&[inf, out_f], &wq, &ws, 1);
                let mm = b.node("MatMul", &[&x, &wn], vec![]);
                let bn = b.f32s(&[out_f], &bias_f);
                b.node("Add", &[&mm, &bn], vec![])
            }
        };
        let y = b.qdq(&y, s_out, z_out, false);
        check(&format!("linear_{form}"), &b, &y, |x| {
            let xd: Vec<f64> = x.v.iter().map(|&v| fq(v, s_in, 0, false)).collect();
            (0..out_f)
                .map(|o| {
                    let bias = if form == "matmul_add" {
                        bias_f[o] as f64
                    } else {
                        (bias_f[o] / (s_in * ws[o])).round() as f64 * (s_in * ws[o]) as f64
                    };
                    let s: f64 = (0..inf).map(|i| xd[i] * wf(o, i, &wq)).sum::<f64>() + bias;
                    quant(s, s_out, z_out, false)
                })
                .collect()
        });
    }
}

/// A residual Add of two differently quantized tensors, followed by Relu.
#[test]
fn residual_add_relu_s8() {
    let (c, h, w) = (2, 5, 6);
    let (s_in, z_in) = (1.0 / 255.0, -128);
    let (s_a, z_a, s_y, z_y) = (0.013, 3, 0.02, -128);
    let mut b = B::new(c, h, w);
    let x = b.qdq("x", s_in, z_in, true);
    // path a: x·(−1.5) requantized through a 1×1 conv with weight −127, scale 1.5/127
    let wn = b.dq_weights(&[c, 1, 1, 1], &[-127, -127], &[1.5 / 127.0, 1.5 / 127.0], 0);
    let a = b.node(
        "Conv",
        &[&x, &wn],
        vec![
            ("kernel_shape", A::Is(vec![1, 1])),
            ("group", A::I(c as i64)),
        ],
    );
    let a = b.qdq(&a, s_a, z_a, true);
    let y = b.node("Add", &[&a, &x], vec![]);
    let y = b.node("Relu", &[&y], vec![]);
    let y = b.qdq(&y, s_y, z_y, true);
    let out = b.node("Flatten", &[&y], vec![]);
    check("residual_add", &b, &out, |x| {
        x.v.iter()
            .map(|&v| {
                let xd = fq(v, s_in, z_in, true);
                let ad = fq(xd * (-127.0 * (1.5f32 / 127.0) as f64), s_a, z_a, true);
                quant((ad + xd).max(0.0), s_y, z_y, true)
            })
            .collect()
    });
}

/// MaxPool (3×3, stride 2, pad 1), AveragePool 2×2 and GlobalAveragePool, with Clip.
#[test]
fn pools_and_clip() {
    let (c, h, w) = (3, 9, 9);
    let s_in = 1.0 / 255.0;
    for kind in ["max", "avg", "gap", "clip"] {
        let mut b = B::new(c, h, w);
        let x = b.qdq("x", s_in, 0, false);
        let (s_o, z_o) = (0.003, 10);
        let y = match kind {
            "max" => {
                let m = b.node(
                    "MaxPool",
                    &[&x],
                    vec![
                        ("kernel_shape", A::Is(vec![3, 3])),
                        ("strides", A::Is(vec![2, 2])),
                        ("pads", A::Is(vec![1, 1, 1, 1])),
                    ],
                );
                b.qdq(&m, s_in, 0, false)
            }
            "avg" => {
                let m = b.node(
                    "AveragePool",
                    &[&x],
                    vec![
                        ("kernel_shape", A::Is(vec![2, 2])),
                        ("strides", A::Is(vec![2, 2])),
                    ],
                );
                b.qdq(&m, s_o, z_o, false)
            }
            "gap" => {
                let m = b.node("GlobalAveragePool", &[&x], vec![]);
                b.qdq(&m, s_o, z_o, false)
            }
            _ => {
                let lo = b.f32s(&[], &[0.2]);
                let hi = b.f32s(&[], &[0.7]);
                let m = b.node("Clip", &[&x, &lo, &hi], vec![]);
                b.qdq(&m, s_o, z_o, false)
            }
        };
        let out = b.node("Flatten", &[&y], vec![]);
        check(&format!("pool_{kind}"), &b, &out, |x| {
            let xd = x.map(|v| fq(v, s_in, 0, false));
            match kind {
                "max" => pool(&xd, 3, 2, 1, true)
                    .v
                    .iter()
                    .map(|&v| quant(v, s_in, 0, false))
                    .collect(),
                "avg" => pool(&xd, 2, 2, 0, false)
                    .v
                    .iter()
                    .map(|&v| quant(v, s_o, z_o, false))
                    .collect(),
                "gap" => pool(&xd, 9, 1, 0, false)
                    .v
                    .iter()
                    .map(|&v| quant(v, s_o, z_o, false))
                    .collect(),
                _ => {
                    xd.v.iter()
                        .map(|&v| quant(v.clamp(0.2, 0.7), s_o, z_o, false))
                        .collect()
                }
            }
        });
    }
}

/// BatchNormalization folded into the Conv before it, and kept as its own layer after a Q/DQ.
#[test]
fn batch_norm_folded_and_standalone() {
    let (c, h, w, co) = (2, 6, 6, 3);
    let mut rng = Rng(99);
    let wq: Vec<i8> = (0..co * c * 9).map(|_| rng.int(-127, 127) as i8).collect();
    let ws = vec![0.01f32; co];
    let gamma = [1.3f32, -0.7, 0.4];
    let beta = [0.1f32, -0.2, 0.05];
    let mean = [0.05f32, -0.1, 0.2];
    let var = [0.5f32, 1.5, 0.2];
    let (s_in, s_mid, z_mid, s_out, z_out) = (1.0 / 255.0, 0.01, 128, 0.012, 0);
    for folded in [true, false] {
        let mut b = B::new(c, h, w);
        let x = b.qdq("x", s_in, 0, false);
        let wn = b.dq_weights(&[co, c, 3, 3], &wq, &ws, 0);
        let y = b.node(
            "Conv",
            &[&x, &wn],
            vec![
                ("kernel_shape", A::Is(vec![3, 3])),
                ("pads", A::Is(vec![1; 4])),
            ],
        );
        let y = if folded {
            y
        } else {
            b.qdq(&y, s_mid, z_mid, false)
        };
        let [g, be, m, v] = [&gamma, &beta, &mean, &var].map(|p| b.f32s(&[co], p.as_slice()));
        let y = b.node(
            "BatchNormalization",
            &[&y, &g, &be, &m, &v],
            vec![("epsilon", A::F(1e-5))],
        );
        let y = b.node("Relu", &[&y], vec![]);
        let y = b.qdq(&y, s_out, z_out, false);
        let out = b.node("Flatten", &[&y], vec![]);
        check(&format!("batchnorm_folded_{folded}"), &b, &out, |x| {
            let xd = x.map(|v| fq(v, s_in, 0, false));
            let wf: Vec<f64> = wq.iter().map(|&q| q as f64 * 0.01f32 as f64).collect();
            let y = conv(&xd, &wf, co, [3, 3], 1, [1; 4], 1, 1, &[0.0; 3]);
            let plane = h * w;
            y.v.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = i / plane;
                    let v = if folded {
                        v
                    } else {
                        fq(v, s_mid, z_mid, false)
                    };
                    let f = gamma[ch] as f64 / (var[ch] as f64 + 1e-5).sqrt();
                    let bn = (v - mean[ch] as f64) * f + beta[ch] as f64;
                    quant(bn.max(0.0), s_out, z_out, false)
                })
                .collect()
        });
    }
}

/// QOperator QLinearConv with int8 activations and a bias, then com.microsoft
/// QLinearGlobalAveragePool.
#[test]
fn qlinear_conv_and_global_pool_s8() {
    let (c, h, w, co) = (2, 6, 5, 4);
    let mut rng = Rng(5);
    let wq: Vec<i8> = (0..co * c * 9).map(|_| rng.int(-127, 127) as i8).collect();
    let ws: Vec<f32> = (0..co).map(|_| rng.float(0.003, 0.01)).collect();
    let bq: Vec<i32> = (0..co).map(|_| rng.int(-500, 500) as i32).collect();
    let (s_in, z_in, s_c, z_c, s_o, z_o) = (1.0 / 255.0, -128, 0.015, -20, 0.004, 7);
    let mut b = B::new(c, h, w);
    let si = b.f32s(&[], &[s_in]);
    let zi = b.zp(z_in, true);
    let xq = b.node("QuantizeLinear", &["x", &si, &zi], vec![]);
    let wn = b.i8s(&[co, c, 3, 3], &wq);
    let wsn = b.f32s(&[co], &ws);
    let wz = b.i8s(&[co], &vec![0; co]);
    let scn = b.f32s(&[], &[s_c]);
    let zcn = b.zp(z_c, true);
    let bn = b.i32s(&[co], &bq);
    let y = b.node(
        "QLinearConv",
        &[&xq, &si, &zi, &wn, &wsn, &wz, &scn, &zcn, &bn],
        vec![("pads", A::Is(vec![1; 4]))],
    );
    let son = b.f32s(&[], &[s_o]);
    let zon = b.zp(z_o, true);
    let p = b.node_in(
        "com.microsoft",
        "QLinearGlobalAveragePool",
        &[&y, &scn, &zcn, &son, &zon],
        vec![],
    );
    let f = b.node("Flatten", &[&p], vec![]);
    let out = b.node("DequantizeLinear", &[&f, &son, &zon], vec![]);
    check("qlinearconv_gap", &b, &out, |x| {
        let xd = x.map(|v| fq(v, s_in, z_in, true));
        let wf: Vec<f64> = wq
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f64 * ws[i / (c * 9)] as f64)
            .collect();
        let bf: Vec<f64> = bq
            .iter()
            .enumerate()
            .map(|(o, &q)| q as f64 * (s_in * ws[o]) as f64)
            .collect();
        let y = conv(&xd, &wf, co, [3, 3], 1, [1; 4], 1, 1, &bf).map(|v| fq(v, s_c, z_c, true));
        (0..co)
            .map(|o| {
                let m: f64 = y.v[o * h * w..(o + 1) * h * w].iter().sum::<f64>() / (h * w) as f64;
                quant(m, s_o, z_o, true)
            })
            .collect()
    });
}

/// A squeeze-excitation block: a depthwise 1×1 conv, its global average pooled through a float
/// HardSigmoid into a per-channel gate, and the float Mul of the two (MobileNetV3's pattern as
/// onnxruntime's QDQ quantizer leaves it).
#[test]
fn squeeze_excitation_gate() {
    let (c, h, w) = (3, 4, 5);
    let s_in = 1.0 / 255.0;
    let (s_a, z_a, s_p, z_p, s_g, z_g, s_y, z_y) = (0.01, 20, 0.008, 30, 1.0 / 255.0, 0, 0.006, 40);
    let mut b = B::new(c, h, w);
    let x = b.qdq("x", s_in, 0, false);
    let wv: [i8; 3] = [90, -70, 127];
    let ws = [0.02f32, 0.015, 0.01];
    let wq = b.dq_weights(&[c, 1, 1, 1], &wv, &ws, 0);
    let a = b.node(
        "Conv",
        &[&x, &wq],
        vec![
            ("kernel_shape", A::Is(vec![1, 1])),
            ("group", A::I(c as i64)),
        ],
    );
    let a = b.qdq(&a, s_a, z_a, false);
    let p = b.node("GlobalAveragePool", &[&a], vec![]);
    let p = b.qdq(&p, s_p, z_p, false);
    let g = b.node(
        "HardSigmoid",
        &[&p],
        vec![("alpha", A::F(0.5)), ("beta", A::F(0.5))],
    );
    let g = b.qdq(&g, s_g, z_g, false);
    let m = b.node("Mul", &[&a, &g], vec![]);
    let y = b.qdq(&m, s_y, z_y, false);
    let out = b.node("Flatten", &[&y], vec![]);
    check("squeeze_excitation", &b, &out, |x| {
        let plane = h * w;
        let mut out = vec![0; c * plane];
        for ch in 0..c {
            let ad: Vec<f64> = (0..plane)
                .map(|p| {
                    let xd = fq(x.v[ch * plane + p], s_in, 0, false);
                    fq(xd * (wv[ch] as f32 * ws[ch]) as f64, s_a, z_a, false)
                })
                .collect();
            let pd = fq(ad.iter().sum::<f64>() / plane as f64, s_p, z_p, false);
            let gd = fq((0.5 * pd + 0.5).clamp(0.0, 1.0), s_g, z_g, false);
            for p in 0..plane {
                out[ch * plane + p] = quant(ad[p] * gd, s_y, z_y, false);
            }
        }
        out
    });
}

/// Concat along channels of three tensors with their own parameters (two conv branches, one
/// of them signed with a zero point inside its range, and the block's input itself), then a
/// Relu before the QuantizeLinear, as onnxruntime's quantizer leaves an inception-style block;
/// and the same concat as QOperator's `QLinearConcat`.
#[test]
fn concat_of_branches_with_their_own_scales() {
    let (c, h, w) = (2, 4, 5);
    let s_in = 1.0 / 255.0;
    let (s_a, s_b, z_b, s_y) = (0.004f32, 0.006f32, 20, 0.005f32);
    let mut rng = Rng(41);
    let wa: Vec<i8> = (0..2 * c).map(|_| rng.int(-127, 127) as i8).collect();
    let wb: Vec<i8> = (0..3 * c * 9).map(|_| rng.int(-127, 127) as i8).collect();
    let (was, wbs) = (0.004f32, 0.003f32);
    let branches = |x: &T| -> Vec<T> {
        let xd = x.map(|v| fq(v, s_in, 0, false));
        let wa_f: Vec<f64> = wa.iter().map(|&v| v as f64 * was as f64).collect();
        let wb_f: Vec<f64> = wb.iter().map(|&v| v as f64 * wbs as f64).collect();
        let a = conv(&xd, &wa_f, 2, [1, 1], 1, [0; 4], 1, 1, &[0.0; 2])
            .map(|v| fq(v.max(0.0), s_a, 0, false));
        let bb =
            conv(&xd, &wb_f, 3, [3, 3], 1, [1; 4], 1, 1, &[0.0; 3]).map(|v| fq(v, s_b, z_b, false));
        vec![a, bb, xd]
    };
    let reference = |x: &T| -> Vec<i32> {
        branches(x)
            .iter()
            .flat_map(|t| t.v.iter().map(|&v| quant(v.max(0.0), s_y, 0, false)))
            .collect()
    };

    // The two conv branches on `x` (a: 1×1 → Relu, b: 3×3), before their QuantizeLinear.
    let convs = |b: &mut B, x: &str| -> (String, String) {
        let wan = b.dq_weights(&[2, c, 1, 1], &wa, &[was; 2], 0);
        let a = b.node(
            "Conv",
            &[x, &wan],
            vec![("kernel_shape", A::Is(vec![1, 1]))],
        );
        let a = b.node("Relu", &[&a], vec![]);
        let wbn = b.dq_weights(&[3, c, 3, 3], &wb, &[wbs; 3], 0);
        let kernel = ("kernel_shape", A::Is(vec![3, 3]));
        let bb = b.node(
            "Conv",
            &[x, &wbn],
            vec![kernel, ("pads", A::Is(vec![1; 4]))],
        );
        (a, bb)
    };
    let mut b = B::new(c, h, w);
    let x = b.qdq("x", s_in, 0, false);
    let (a, bb) = convs(&mut b, &x);
    let a = b.qdq(&a, s_a, 0, false);
    let bb = b.qdq(&bb, s_b, z_b, false);
    let y = b.node("Concat", &[&a, &bb, &x], vec![("axis", A::I(1))]);
    let y = b.node("Relu", &[&y], vec![]);
    let y = b.qdq(&y, s_y, 0, false);
    let out = b.node("Flatten", &[&y], vec![("axis", A::I(1))]);
    check("concat_qdq", &b, &out, reference);

    // QLinearConcat of the same three tensors (their QuantizeLinear outputs).
    let mut b = B::new(c, h, w);
    let sx = b.f32s(&[], &[s_in]);
    let zx = b.zp(0, false);
    let xq = b.node("QuantizeLinear", &["x", &sx, &zx], vec![]);
    let x = b.node("DequantizeLinear", &[&xq, &sx, &zx], vec![]);
    let (a, bb) = convs(&mut b, &x);
    let (sa, za) = (b.f32s(&[], &[s_a]), b.zp(0, false));
    let aq = b.node("QuantizeLinear", &[&a, &sa, &za], vec![]);
    let (sb, zb) = (b.f32s(&[], &[s_b]), b.zp(z_b, false));
    let bq = b.node("QuantizeLinear", &[&bb, &sb, &zb], vec![]);
    let (sy, zy) = (b.f32s(&[], &[s_y]), b.zp(0, false));
    let y = b.node_in(
        "com.microsoft",
        "QLinearConcat",
        &[&sy, &zy, &aq, &sa, &za, &bq, &sb, &zb, &xq, &sx, &zx],
        vec![("axis", A::I(1))],
    );
    let y = b.node("DequantizeLinear", &[&y, &sy, &zy], vec![]);
    let out = b.node("Flatten", &[&y], vec![("axis", A::I(1))]);
    // No Relu here: the output's zero point 0 clamps the same values.
    check("qlinear_concat", &b, &out, reference);
}

/// What the Concat and Pad import refuses, by name: another axis, a Pad that reflects, and a
/// malformed QLinearConcat.
#[test]
fn concat_and_pad_refusals_name_the_node() {
    let refuse = |build: &dyn Fn(&mut B) -> String| -> String {
        let mut b = B::new(2, 3, 3);
        let out = build(&mut b);
        qforget::onnx::import(&b.model(&out), Path::new("refuse.onnx"))
            .map(|_| ())
            .expect_err("must be refused")
            .to_string()
    };
    let e = refuse(&|b| {
        let x = b.qdq("x", 0.01, 0, false);
        let y = b.node("Concat", &[&x, &x], vec![("axis", A::I(2))]);
        b.qdq(&y, 0.01, 0, false)
    });
    assert!(
        e.contains("Concat") && e.contains("axis 2") && e.contains("refuse.onnx"),
        "{e}"
    );
    let e = refuse(&|b| {
        let x = b.qdq("x", 0.01, 0, false);
        let pads = b.i64s(&[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
        // Zero borders are a Pad layer (see `pads`); a reflection is not supported.
        let y = b.node("Pad", &[&x, &pads], vec![("mode", A::S("reflect"))]);
        b.qdq(&y, 0.01, 0, false)
    });
    assert!(e.contains("Pad") && e.contains("mode reflect"), "{e}");
    let e = refuse(&|b| {
        let s = b.f32s(&[], &[0.01]);
        let z = b.zp(0, false);
        let xq = b.node("QuantizeLinear", &["x", &s, &z], vec![]);
        let y = b.node_in(
            "com.microsoft",
            "QLinearConcat",
            &[&s, &z, &xq, &s],
            vec![("axis", A::I(1))],
        );
        b.node("DequantizeLinear", &[&y, &s, &z], vec![])
    });
    assert!(e.contains("QLinearConcat") && e.contains("4 inputs"), "{e}");
}

/// Squeeze and Unsqueeze of the size-1 spatial axes after a global pooling
/// (`x.squeeze(-1).squeeze(-1)`, opset 13 with axes as an input) compute what Flatten does; a
/// Squeeze of another axis is refused by name.
#[test]
fn squeeze_of_pooled_axes_is_a_flatten() {
    let (c, h, w, out_f) = (3, 4, 4, 5);
    let mut rng = Rng(77);
    let wq: Vec<i8> = (0..c * out_f).map(|_| rng.int(-127, 127) as i8).collect();
    let build = |b: &mut B, shape_ops: &dyn Fn(&mut B, &str) -> String| -> String {
        let x = b.qdq("x", 1.0 / 255.0, 0, false);
        let p = b.node("GlobalAveragePool", &[&x], vec![]);
        let p = b.qdq(&p, 0.003, 0, false);
        let f = shape_ops(b, &p);
        let wn = b.dq_weights(&[out_f, c], &wq, &[0.01; 5], 0);
        let y = b.node("Gemm", &[&f, &wn], vec![("transB", A::I(1))]);
        b.qdq(&y, 0.02, 128, false)
    };
    let run = |shape_ops: &dyn Fn(&mut B, &str) -> String| -> Vec<u8> {
        let mut b = B::new(c, h, w);
        let out = build(&mut b, shape_ops);
        let g = qforget::onnx::import(&b.model(&out), Path::new("squeeze.onnx")).unwrap();
        let mut r = Rng(5);
        let images: Vec<u8> = (0..N * c * h * w).map(|_| r.int(0, 255) as u8).collect();
        g.forward(&images, N).unwrap().data
    };
    let flat = run(&|b, p| b.node("Flatten", &[p], vec![("axis", A::I(1))]));
    let squeezed = run(&|b, p| {
        let a = b.i64s(&[1], &[-1]);
        let s = b.node("Squeeze", &[p, &a], vec![]);
        let s = b.node("Squeeze", &[&s, &a], vec![]);
        let u = b.i64s(&[2], &[2, 3]);
        let s = b.node("Unsqueeze", &[&s, &u], vec![]);
        let both = b.i64s(&[2], &[2, 3]);
        b.node("Squeeze", &[&s, &both], vec![])
    });
    assert_eq!(flat, squeezed);

    let mut b = B::new(c, h, w);
    let out = build(&mut b, &|b, p| {
        let a = b.i64s(&[1], &[1]);
        b.node("Squeeze", &[p, &a], vec![])
    });
    let e = qforget::onnx::import(&b.model(&out), Path::new("squeeze.onnx"))
        .map(|_| ())
        .expect_err("a Squeeze of the channels")
        .to_string();
    assert!(e.contains("Squeeze") && e.contains("[1]"), "{e}");
}

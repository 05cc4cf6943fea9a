//! Float segments between DequantizeLinear and QuantizeLinear on small built graphs: a per-channel
//! float bias Add on an image tensor (NCHW broadcasting onto NHWC storage) against the ONNX
//! semantics computed here in f32, in onnxruntime's order; and what is refused, by name.

use std::path::Path;

use super::onnx_builder::{Rng, A, B};

/// Importing `m` (as file `name`) fails with a message that contains every one of `parts`.
fn refused(m: &qforget::onnx::pb::ModelProto, name: &str, parts: &[&str]) {
    let err = qforget::onnx::import(m, Path::new(name))
        .unwrap_err()
        .to_string();
    for part in parts {
        assert!(err.contains(part), "{err}");
    }
}

/// ONNX QuantizeLinear (uint8) in f32, as onnxruntime computes it.
fn q8(x: f32, s: f32, zp: i32) -> i32 {
    ((x / s).round_ties_even() + zp as f32).clamp(0.0, 255.0) as i32
}

#[test]
fn per_channel_float_bias_add_on_an_image_follows_onnx() {
    // input [N,3,4,5] → Q/DQ → Add(b[3,1,1]) → Relu → Q/DQ → Flatten → output (quantized).
    let (c, h, w) = (3, 4, 5);
    let mut b = B::new(c, h, w);
    let (s_in, z_in, s_out, z_out) = (1.0 / 255.0, 0, 0.006, 7);
    let x = b.qdq("x", s_in, z_in, false);
    let bias = [0.1f32, -0.35, 0.02];
    let bn = b.f32s(&[c, 1, 1], &bias);
    let add = b.node("Add", &[&x, &bn], vec![]);
    let relu = b.node("Relu", &[&add], vec![]);
    let y = b.qdq(&relu, s_out, z_out, false);
    let out = b.node("Flatten", &[&y], vec![]);
    let m = b.model(&out);
    let g = qforget::onnx::import(&m, Path::new("bias_add.onnx")).unwrap();
    assert!(g.layers.iter().any(|l| l.op.kind() == "bias_add"));
    let mut r = Rng(0x51ed);
    let n = 4;
    let images: Vec<u8> = (0..n * c * h * w).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, n).unwrap();
    for i in 0..n {
        let row = got.model_row(i);
        for ch in 0..c {
            for p in 0..h * w {
                let px = images[i * c * h * w + ch * h * w + p] as f32 / 255.0;
                let r = (q8(px, s_in, z_in) - z_in) as f32 * s_in + bias[ch];
                let want = q8(r.max(0.0), s_out, z_out);
                assert_eq!(
                    row[ch * h * w + p],
                    want,
                    "image {i} channel {ch} pixel {p}"
                );
            }
        }
    }
}

#[test]
fn a_bias_that_varies_along_the_width_is_refused_by_name() {
    let (c, h, w) = (2, 3, 3);
    let mut b = B::new(c, h, w);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    // [3] broadcasts along W, not along the channels.
    let bn = b.f32s(&[w], &[0.1, 0.2, 0.3]);
    let add = b.node("Add", &[&x, &bn], vec![]);
    let y = b.qdq(&add, 0.01, 0, false);
    let m = b.model(&y);
    refused(
        &m,
        "width_bias.onnx",
        &["width_bias.onnx", "Add", "node_Add", "[3]"],
    );
}

/// Q/DQ of the input `[N,1,2,2]` → Flatten → MatMul by int8 weights `HEAD_W` (scale 0.01): a
/// float head; returns the MatMul's output.
fn matmul_head(b: &mut B) -> String {
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let f = b.node("Flatten", &[&x], vec![]);
    let w: Vec<i8> = HEAD_W.iter().flatten().copied().collect();
    let wq = b.dq_weights(&[4, 3], &w, &[0.01; 3], 1);
    b.node("MatMul", &[&f, &wq], vec![])
}

const HEAD_W: [[i8; 3]; 4] = [[1, -2, 3], [4, 5, -6], [7, 8, 9], [10, -11, 12]];
/// x = [1, 0, 0.2, 0.4] on the 1/255 grid.
const HEAD_IMAGE: [u8; 4] = [255, 0, 51, 102];

/// The head's real logit `j` on `HEAD_IMAGE`: z_j = Σ_i x_i · 0.01 · w[i][j].
fn head_logit(j: usize) -> f32 {
    (0..4)
        .map(|i| HEAD_IMAGE[i] as f32 / 255.0 * 0.01 * HEAD_W[i][j] as f32)
        .sum()
}

#[test]
fn an_unsupported_float_op_after_a_float_head_is_named() {
    // input [N,1,2,2] → Q/DQ → Flatten → MatMul(DQ w) → Sigmoid → output. The Sigmoid itself
    // runs in float on the MatMul's result (as NNCF's activations do); a float function as the
    // model's output is what is refused, naming the output.
    let mut b = B::new(1, 2, 2);
    let mm = matmul_head(&mut b);
    let sg = b.node("Sigmoid", &[&mm], vec![]);
    let m = b.model(&sg);
    refused(
        &m,
        "sigmoid_head.onnx",
        &[
            "sigmoid_head.onnx",
            &format!("output '{sg}'"),
            "a float output only from a Gemm/MatMul",
        ],
    );
    // Without the Sigmoid the same graph imports, with a float output.
    b.nodes.retain(|n| n.op_type != "Sigmoid");
    let m = b.model(&mm);
    let g = qforget::onnx::import(&m, Path::new("matmul_head.onnx")).unwrap();
    assert!(g.real_output);
    let l = g.forward(&HEAD_IMAGE, 1).unwrap();
    for (j, &z) in l.real.as_ref().unwrap().iter().enumerate() {
        let want = head_logit(j);
        assert!(
            (z - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{j}: {z} vs {want}"
        );
    }
}

/// ONNX QuantizeLinear (int8) in f32.
fn qs8(x: f32, s: f32, zp: i32) -> i32 {
    ((x / s).round_ties_even() + zp as f32).clamp(-128.0, 127.0) as i32
}

/// input [N,3,4,5] → Q/DQ (u8) → `ops` in float → Q/DQ (`signed` output) → Flatten, against
/// `f` evaluated here in f32 on the dequantized input, channel by channel.
fn chain_follows_onnx(
    name: &str,
    ops: &dyn Fn(&mut B, &str) -> String,
    f: &dyn Fn(usize, f32) -> f32,
    s_out: f32,
    z_out: i32,
    signed: bool,
) {
    let (c, h, w) = (3, 4, 5);
    let mut b = B::new(c, h, w);
    let (s_in, z_in) = (1.0 / 255.0, 0);
    let x = b.qdq("x", s_in, z_in, false);
    let last = ops(&mut b, &x);
    let y = b.qdq(&last, s_out, z_out, signed);
    let out = b.node("Flatten", &[&y], vec![]);
    let m = b.model(&out);
    let g = qforget::onnx::import(&m, Path::new(name)).unwrap();
    assert!(
        g.layers.iter().any(|l| l.op.kind() == "pointwise"),
        "{name}: no pointwise layer"
    );
    let mut r = Rng(0x9e37);
    let n = 6;
    let images: Vec<u8> = (0..n * c * h * w).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, n).unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        let row = got.model_row(i);
        for ch in 0..c {
            for p in 0..h * w {
                let px = images[i * c * h * w + ch * h * w + p] as f32 / 255.0;
                let xr = (q8(px, s_in, z_in) - z_in) as f32 * s_in;
                let v = f(ch, xr);
                let want = if signed {
                    qs8(v, s_out, z_out)
                } else {
                    q8(v, s_out, z_out)
                };
                seen.insert(want);
                assert_eq!(
                    row[ch * h * w + p],
                    want,
                    "{name}: image {i} ch {ch} px {p}"
                );
            }
        }
    }
    // The check is not vacuous: the outputs take many values.
    assert!(
        seen.len() > 20,
        "{name}: only {} distinct outputs",
        seen.len()
    );
}

#[test]
fn float_element_wise_chains_follow_onnx() {
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    chain_follows_onnx(
        "normalize_hardswish.onnx",
        &|b, x| {
            let m = b.f32s(&[3, 1, 1], &mean);
            let s = b.f32s(&[1, 3, 1, 1], &std);
            let t = b.node("Sub", &[x, &m], vec![]);
            let t = b.node("Div", &[&t, &s], vec![]);
            b.node("HardSwish", &[&t], vec![])
        },
        &|c, x| {
            let v = (x - mean[c]) / std[c];
            v * (v / 6.0 + 0.5).clamp(0.0, 1.0)
        },
        0.02,
        20,
        false,
    );
    chain_follows_onnx(
        "mul_sigmoid.onnx",
        &|b, x| {
            let k = b.f32s(&[], &[6.0]);
            let t = b.node("Mul", &[&k, x], vec![]);
            let h = b.f32s(&[], &[3.0]);
            let t = b.node("Sub", &[&t, &h], vec![]);
            b.node("Sigmoid", &[&t], vec![])
        },
        &|_, x| 1.0 / (1.0 + (-(6.0 * x - 3.0)).exp()),
        1.0 / 256.0,
        0,
        false,
    );
    chain_follows_onnx(
        "leaky_hardsigmoid_tanh.onnx",
        &|b, x| {
            let h = b.f32s(&[], &[0.5]);
            let t = b.node("Sub", &[&h, x], vec![]);
            let t = b.node("LeakyRelu", &[&t], vec![("alpha", A::F(0.1))]);
            let t = b.node("Mul", &[&t, &h], vec![]);
            b.node("Tanh", &[&t], vec![])
        },
        &|_, x| {
            let v = 0.5 - x;
            let v = if v >= 0.0 { v } else { 0.1 * v };
            (v * 0.5).tanh()
        },
        1.0 / 256.0,
        -3,
        true,
    );
    chain_follows_onnx(
        "relu_hardsigmoid.onnx",
        &|b, x| {
            let k = b.f32s(&[3, 1, 1], &[4.0, -4.0, 8.0]);
            let t = b.node("Mul", &[x, &k], vec![]);
            let t = b.node("Relu", &[&t], vec![]);
            b.node(
                "HardSigmoid",
                &[&t],
                vec![("alpha", A::F(0.25)), ("beta", A::F(0.1))],
            )
        },
        &|c, x| {
            let v = (x * [4.0f32, -4.0, 8.0][c]).max(0.0);
            (0.25 * v + 0.1).clamp(0.0, 1.0)
        },
        1.0 / 255.0,
        0,
        false,
    );
}

#[test]
fn float_chains_that_are_not_element_wise_are_refused_by_name() {
    // Mul of two activations whose shapes do not broadcast, and a constant along W.
    let mut b = B::new(2, 3, 3);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let f = b.node("Flatten", &[&x], vec![]);
    let mm = b.node("Mul", &[&x, &f], vec![]);
    let q = b.qdq(&mm, 0.01, 0, false);
    refused(
        &b.model(&q),
        "se_mul.onnx",
        &["se_mul.onnx", "Mul", "node_Mul", "shapes"],
    );
    let mut b = B::new(2, 3, 3);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let k = b.f32s(&[3], &[1.0, 2.0, 3.0]);
    let d = b.node("Div", &[&x, &k], vec![]);
    let q = b.qdq(&d, 0.01, 0, false);
    refused(&b.model(&q), "w_div.onnx", &["w_div.onnx", "Div", "[3]"]);
}

#[test]
fn a_final_softmax_keeps_the_logits_and_anything_after_it_is_refused() {
    // input [N,1,2,2] → Q/DQ → Flatten → MatMul(DQ w) → Softmax → output.
    let build = |extra: bool| {
        let mut b = B::new(1, 2, 2);
        let mm = matmul_head(&mut b);
        let sm = b.node("Softmax", &[&mm], vec![("axis", A::I(1))]);
        let out = if extra {
            let k = b.f32s(&[], &[2.0]);
            b.node("Mul", &[&sm, &k], vec![])
        } else {
            sm
        };
        b.model(&out)
    };
    let g = qforget::onnx::import(&build(false), Path::new("softmax.onnx")).unwrap();
    assert!(g.real_output);
    let l = g.forward(&HEAD_IMAGE, 1).unwrap();
    // The graph's output is the logits before the Softmax (what the losses want).
    let z = l.real.as_ref().unwrap();
    for (j, &zj) in z.iter().enumerate() {
        let want = head_logit(j);
        assert!((zj - want).abs() <= 1e-6, "{j}: {zj} vs {want}");
    }
    refused(
        &build(true),
        "softmax_mul.onnx",
        &["softmax_mul.onnx", "Mul", "Softmax"],
    );
}

#[test]
fn an_in_model_normalisation_of_the_input_is_applied_before_its_quantization() {
    // input [N,3,2,2] → Sub(mean[1,3,1,1]) → Div(std[3,1,1]) → Q/DQ (int8) → Flatten.
    let (c, h, w) = (3, 2, 2);
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let build = |branch: bool| {
        let mut b = B::new(c, h, w);
        let m = b.f32s(&[1, 3, 1, 1], &mean);
        let s = b.f32s(&[3, 1, 1], &std);
        let t = b.node("Sub", &["x", &m], vec![]);
        let t = b.node("Div", &[&t, &s], vec![]);
        let y = if branch {
            // A second float branch from the raw input, quantized too: not one chain.
            let raw = b.qdq("x", 1.0 / 255.0, 0, false);
            let y = b.qdq(&t, 0.02, 0, true);
            b.node("Add", &[&y, &raw], vec![])
        } else {
            b.qdq(&t, 0.02, 0, true)
        };
        let out = b.node("Flatten", &[&y], vec![]);
        b.model(&out)
    };
    let g = qforget::onnx::import(&build(false), Path::new("norm_in_model.onnx")).unwrap();
    assert_eq!(g.input.fns.len(), 2);
    let mut r = Rng(0x7f4a);
    let n = 5;
    let images: Vec<u8> = (0..n * c * h * w).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, n).unwrap();
    for i in 0..n {
        let row = got.model_row(i);
        for ch in 0..c {
            for p in 0..h * w {
                let x = images[i * c * h * w + ch * h * w + p] as f32 / 255.0;
                let want = qs8((x - mean[ch]) / std[ch], 0.02, 0);
                assert_eq!(row[ch * h * w + p], want, "image {i} ch {ch} px {p}");
            }
        }
    }
    refused(
        &build(true),
        "norm_branch.onnx",
        &["norm_branch.onnx", "QuantizeLinear", "chain"],
    );
}

#[test]
fn a_squeeze_excitation_gate_multiplies_in_float_as_onnx_does() {
    // input [N,3,2,2] → Q/DQ (a) → global MaxPool → (gate [N,3,1,1]) ; Mul(a, gate) → Q/DQ.
    let (c, h, w) = (3, 2, 2);
    let mut b = B::new(c, h, w);
    let (s_in, s_out, z_out) = (1.0 / 255.0, 0.002, 3);
    let a = b.qdq("x", s_in, 0, false);
    let g = b.node(
        "MaxPool",
        &[&a],
        vec![
            ("kernel_shape", A::Is(vec![2, 2])),
            ("strides", A::Is(vec![2, 2])),
        ],
    );
    let m = b.node("Mul", &[&g, &a], vec![]);
    let y = b.qdq(&m, s_out, z_out, false);
    let out = b.node("Flatten", &[&y], vec![]);
    let gr = qforget::onnx::import(&b.model(&out), Path::new("se.onnx")).unwrap();
    assert!(gr.layers.iter().any(|l| l.op.kind() == "mul"));
    let mut r = Rng(0x5e5e);
    let n = 4;
    let images: Vec<u8> = (0..n * c * h * w).map(|_| r.int(0, 255) as u8).collect();
    let got = gr.forward(&images, n).unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        let row = got.model_row(i);
        for ch in 0..c {
            let px = |p: usize| images[i * c * h * w + ch * h * w + p];
            let gate = (0..h * w).map(px).max().unwrap() as f32 * s_in;
            for p in 0..h * w {
                let want = q8((px(p) as f32 * s_in) * gate, s_out, z_out);
                seen.insert(want);
                assert_eq!(row[ch * h * w + p], want, "image {i} ch {ch} px {p}");
            }
        }
    }
    assert!(seen.len() > 10, "only {} distinct outputs", seen.len());
}

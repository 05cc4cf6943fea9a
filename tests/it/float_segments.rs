//! Float segments between DequantizeLinear and QuantizeLinear on small built graphs: a per-channel
//! float bias Add on an image tensor (NCHW broadcasting onto NHWC storage) against the ONNX
//! semantics computed here in f32, in onnxruntime's order; and what is refused, by name.

use std::path::Path;

use super::onnx_builder::{Rng, B};

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
    let err = qforget::onnx::import(&m, Path::new("width_bias.onnx"))
        .unwrap_err()
        .to_string();
    for part in ["width_bias.onnx", "Add", "node_Add", "[3]"] {
        assert!(err.contains(part), "{err}");
    }
}

#[test]
fn an_unsupported_float_op_after_a_float_head_is_named() {
    // input [N,1,2,2] → Q/DQ → Flatten → MatMul(DQ w) → Sigmoid → output.
    let mut b = B::new(1, 2, 2);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let f = b.node("Flatten", &[&x], vec![]);
    let wq = b.dq_weights(
        &[4, 3],
        &[1, -2, 3, 4, 5, -6, 7, 8, 9, 10, -11, 12],
        &[0.01; 3],
        1,
    );
    let mm = b.node("MatMul", &[&f, &wq], vec![]);
    let sg = b.node("Sigmoid", &[&mm], vec![]);
    let m = b.model(&sg);
    let err = qforget::onnx::import(&m, Path::new("sigmoid_head.onnx"))
        .unwrap_err()
        .to_string();
    for part in ["sigmoid_head.onnx", "Sigmoid", "node_Sigmoid"] {
        assert!(err.contains(part), "{err}");
    }
    // Without the Sigmoid the same graph imports, with a float output.
    b.nodes.retain(|n| n.op_type != "Sigmoid");
    let m = b.model(&mm);
    let g = qforget::onnx::import(&m, Path::new("matmul_head.onnx")).unwrap();
    assert!(g.real_output);
    let l = g.forward(&[255, 0, 51, 102], 1).unwrap();
    // x = [1, 0, 0.2, 0.4] on the 1/255 grid; z_j = Σ_i x_i · 0.01 · w[i][j].
    let wv = [[1., -2., 3.], [4., 5., -6.], [7., 8., 9.], [10., -11., 12.]];
    let xs = [255., 0., 51., 102.].map(|v: f32| v / 255.0);
    for (j, &z) in l.real.as_ref().unwrap().iter().enumerate() {
        let want: f32 = (0..4).map(|i| xs[i] * 0.01 * wv[i][j]).sum();
        assert!(
            (z - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{j}: {z} vs {want}"
        );
    }
}

//! Activations quantized per channel (NNCF puts one scale per channel on the input of a
//! depthwise conv) on small built graphs: the accepted pattern against the ONNX semantics in
//! f64 (within 1 LSB), and every other reader or producer refused by name.

use std::path::Path;

use super::onnx_builder::{conv, fq, quant, Rng, A, B, T};

/// Channel scales of the per-channel tensor in these graphs (zero point 0, uint8).
const SCALES: [f32; 3] = [0.004, 0.011, 0.0231];

/// Importing `m` (as file `name`) fails with a message that contains every one of `parts`.
fn refused(m: &qforget::onnx::pb::ModelProto, name: &str, parts: &[&str]) {
    let err = qforget::onnx::import(m, Path::new(name))
        .unwrap_err()
        .to_string();
    for part in parts {
        assert!(err.contains(part), "{err}");
    }
}

/// Q/DQ of `x` with one scale per channel (axis 1) and zero points `zps`.
fn qdq_channels(b: &mut B, x: &str, zps: &[u8]) -> String {
    let s = b.f32s(&[SCALES.len()], &SCALES);
    let z = b.u8s(&[zps.len()], zps);
    let q = b.node("QuantizeLinear", &[x, &s, &z], vec![("axis", A::I(1))]);
    b.node("DequantizeLinear", &[&q, &s, &z], vec![("axis", A::I(1))])
}

/// Weights and biases of the two convs.
struct Net {
    w1: Vec<i8>,
    s1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<i8>,
    s2: Vec<f32>,
    b2: Vec<f32>,
}

fn net() -> Net {
    let mut r = Rng(0xc4a7);
    Net {
        w1: (0..3 * 2).map(|_| r.int(-127, 127) as i8).collect(),
        s1: (0..3).map(|_| r.float(0.002, 0.01)).collect(),
        b1: (0..3).map(|_| r.float(-0.2, 0.4)).collect(),
        w2: (0..3 * 3 * 9).map(|_| r.int(-127, 127) as i8).collect(),
        s2: (0..3).map(|_| r.float(0.001, 0.004)).collect(),
        b2: (0..3).map(|_| r.float(-0.1, 0.1)).collect(),
    }
}

/// What reads the per-channel tensor instead of the depthwise conv (`None`: the conv).
type Reader<'a> = Option<&'a dyn Fn(&mut B, &str) -> String>;

/// input [N,2,4,4] → Q/DQ → Conv 1×1 (2→3, float bias) → Clip(0, 6) → Q/DQ per channel →
/// `reader` (a depthwise 3×3 Conv, pad 1, float bias, by default) → Q/DQ (0.02, 0) → Flatten.
fn model(n: &Net, zps: &[u8], group: i64, reader: Reader) -> qforget::onnx::pb::ModelProto {
    let mut b = B::new(2, 4, 4);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let w1 = b.dq_weights(&[3, 2, 1, 1], &n.w1, &n.s1, 0);
    let b1 = b.f32s(&[3], &n.b1);
    let c1 = b.node("Conv", &[&x, &w1, &b1], vec![]);
    let lo = b.f32s(&[], &[0.0]);
    let hi = b.f32s(&[], &[6.0]);
    let clip = b.node("Clip", &[&c1, &lo, &hi], vec![]);
    let a = qdq_channels(&mut b, &clip, zps);
    let y = match reader {
        Some(f) => f(&mut b, &a),
        None => {
            let cin_g = (3 / group) as usize;
            let w2 = b.dq_weights(&[3, cin_g, 3, 3], &n.w2[..3 * cin_g * 9], &n.s2, 0);
            let b2 = b.f32s(&[3], &n.b2);
            b.node(
                "Conv",
                &[&a, &w2, &b2],
                vec![("group", A::I(group)), ("pads", A::Is(vec![1; 4]))],
            )
        }
    };
    let y = b.qdq(&y, 0.02, 0, false);
    let out = b.node("Flatten", &[&y], vec![]);
    b.model(&out)
}

/// The graph of [`model`] with zero points `zps` on `batch` random images against the ONNX
/// semantics in f64: the largest output difference in LSB and how many outputs differ.
fn against_onnx(g: &qforget::graph::Graph, n: &Net, zps: &[u8]) -> (i32, usize) {
    let mut r = Rng(0x77);
    let batch = 6;
    let images: Vec<u8> = (0..batch * 32).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, batch).unwrap();
    let (mut worst, mut off) = (0, 0);
    for i in 0..batch {
        let x = T {
            c: 2,
            h: 4,
            w: 4,
            v: images[i * 32..(i + 1) * 32]
                .iter()
                .map(|&p| fq(p as f64 / 255.0, 1.0 / 255.0, 0, false))
                .collect(),
        };
        let real = |w: &[i8], s: &[f32], per: usize| -> Vec<f64> {
            w.iter()
                .enumerate()
                .map(|(k, &v)| v as f64 * s[k / per] as f64)
                .collect()
        };
        let b1: Vec<f64> = n.b1.iter().map(|&v| v as f64).collect();
        let y1 = conv(&x, &real(&n.w1, &n.s1, 2), 3, [1, 1], 1, [0; 4], 1, 1, &b1);
        // Clip, then the per-channel QuantizeLinear/DequantizeLinear.
        let mut a = y1.map(|v| v.clamp(0.0, 6.0));
        for (k, v) in a.v.iter_mut().enumerate() {
            *v = fq(*v, SCALES[k / 16], zps[k / 16] as i32, false);
        }
        let b2: Vec<f64> = n.b2.iter().map(|&v| v as f64).collect();
        let y2 = conv(
            &a,
            &real(&n.w2[..27], &n.s2, 9),
            3,
            [3, 3],
            1,
            [1; 4],
            1,
            3,
            &b2,
        );
        let row = got.model_row(i);
        for (k, &v) in y2.v.iter().enumerate() {
            let d = (row[k] - quant(v, 0.02, 0, false)).abs();
            worst = worst.max(d);
            off += (d != 0) as usize;
        }
    }
    (worst, off)
}

#[test]
fn per_channel_input_of_a_depthwise_conv_follows_onnx() {
    let n = net();
    let m = model(&n, &[0, 0, 0], 3, None);
    let g = qforget::onnx::import(&m, Path::new("channels.onnx")).unwrap();
    let per_channel: Vec<_> = g.acts.iter().filter(|a| a.per_channel()).collect();
    assert_eq!(per_channel.len(), 1);
    assert_eq!(per_channel[0].channel_scales, SCALES);
    let (worst, off) = against_onnx(&g, &n, &[0, 0, 0]);
    assert!(worst <= 1, "max |Δ| {worst} LSB, {off} values differ");
}

/// Zero points that differ between channels (NNCF's preset MIXED): no integer layer takes
/// them, so the Q/DQ pair is a float function and the depthwise conv a float layer; the output
/// still follows the ONNX semantics (it was refused, `differs between channels`).
#[test]
fn per_channel_zero_points_follow_onnx_in_float() {
    let n = net();
    let zps = [0, 3, 0];
    let g = qforget::onnx::import(&model(&n, &zps, 3, None), Path::new("zps.onnx")).unwrap();
    assert!(g.acts.iter().all(|a| !a.per_channel()));
    let kinds: Vec<&str> = g.layers.iter().map(|l| l.op.kind()).collect();
    assert!(
        kinds.contains(&"pointwise") && kinds.contains(&"float_conv"),
        "{kinds:?}"
    );
    let (worst, off) = against_onnx(&g, &n, &zps);
    eprintln!("per-channel zero points: max |Δ| {worst} LSB, {off} values differ");
    assert!(worst <= 1, "max |Δ| {worst} LSB, {off} values differ");
}

#[test]
fn per_channel_activation_outside_a_depthwise_conv_is_refused_by_name() {
    let n = net();
    // A conv with one group reads the per-channel tensor.
    refused(
        &model(&n, &[0, 0, 0], 1, None),
        "dense.onnx",
        &["dense.onnx", "Conv", "quantized per channel", "group = 1"],
    );
    // An Add, a MaxPool and a QuantizeLinear to other parameters read it.
    let add = |b: &mut B, a: &str| b.node("Add", &[a, a], vec![]);
    refused(
        &model(&n, &[0, 0, 0], 3, Some(&add)),
        "add.onnx",
        &["add.onnx", "Add", "node_Add", "quantized per channel"],
    );
    let pool = |b: &mut B, a: &str| {
        b.node(
            "MaxPool",
            &[a],
            vec![
                ("kernel_shape", A::Is(vec![2, 2])),
                ("strides", A::Is(vec![2, 2])),
            ],
        )
    };
    refused(
        &model(&n, &[0, 0, 0], 3, Some(&pool)),
        "pool.onnx",
        &["pool.onnx", "MaxPool", "quantized per channel"],
    );
}

#[test]
fn per_channel_quantization_of_other_producers_is_refused_by_name() {
    // The model input, quantized per channel.
    let mut b = B::new(3, 4, 4);
    let x = qdq_channels(&mut b, "x", &[0, 0, 0]);
    let out = b.node("Flatten", &[&x], vec![]);
    refused(
        &b.model(&out),
        "input.onnx",
        &["input.onnx", "QuantizeLinear", "the model input"],
    );
    // A float Relu of a dequantized tensor quantized per channel is a float activation and a
    // per-channel QuantizeLinear (NNCF's MobileNetV3 writes one before each depthwise conv),
    // but a Flatten may not read the result: refused there, by name.
    let mut b = B::new(3, 4, 4);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let r = b.node("Relu", &[&x], vec![]);
    let y = qdq_channels(&mut b, &r, &[0, 0, 0]);
    let out = b.node("Flatten", &[&y], vec![]);
    refused(
        &b.model(&out),
        "relu.onnx",
        &["relu.onnx", "Flatten", "per channel", "depthwise Conv"],
    );
}

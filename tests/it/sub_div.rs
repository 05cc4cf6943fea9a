//! The Sub and the Div of two computed tensors (issue 10, item 2), on built graphs against the
//! ONNX definition computed here in f64, with the backward through them checked against
//! finite differences:
//! - onnxruntime's QDQ form of both (`DQ a, DQ b → Sub → Q`, `DQ d, DQ g → Div → Q`): the Sub
//!   is a quantized Add with its second term negated, the Div a float layer then a
//!   QuantizeLinear; within 1 LSB of the definition (the committed `mnist_subdiv_qdq` fixture
//!   checks them against onnxruntime itself, in `fixtures.rs`);
//! - both inside a float segment: a float Sub of two float results, a float Div by one value
//!   per channel and sample (`[N, C, 1, 1]`) and of two tensors of one shape;
//! - the variants that stay unsupported, refused with the op, the node and the file.

use std::path::Path;

use qforget::graph::{Graph, QBatch, Tape};

use super::onnx_builder::{conv, fq, quant, Rng, A, B, T};

/// The f64 sigmoid.
fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Random images of `len` bytes each.
fn images(r: &mut Rng, n: usize, len: usize) -> Vec<u8> {
    (0..n * len).map(|_| r.int(0, 255) as u8).collect()
}

/// The float input's image `i` as an NCHW f64 tensor (a QuantizeLinear at 1/255, zero point 0,
/// gives back the byte: the dequantized input is `p / 255` in f32).
fn input(img: &[u8], c: usize, h: usize) -> T {
    T {
        c,
        h,
        w: h,
        v: img.iter().map(|&p| (p as f32 / 255.0) as f64).collect(),
    }
}

/// Kinds of the layers of a graph, in order.
fn kinds(g: &Graph) -> Vec<&'static str> {
    g.layers.iter().map(|l| l.op.kind()).collect()
}

/// How one step of the integer forward agrees with onnxruntime's run of its ONNX definition.
#[derive(Debug)]
struct Step {
    /// Largest difference, in LSB.
    max: i32,
    /// Values that differ, and those of them whose real output is not within 10⁻³ LSB of a
    /// rounding tie (where the order of f32 operations cannot decide the rounding).
    off: usize,
    off_not_at_tie: usize,
    total: usize,
}

/// The bytes of activation `out` against onnxruntime's definition of the step from activations
/// `a` and `b` with graph optimizations off: both DequantizeLinear in f32 from the forward's own
/// bytes, `f` of them in f32 (computed in f64 and rounded once, the same for a difference or a
/// quotient), QuantizeLinear (round half to even).
fn step(
    g: &Graph,
    acts: &[Option<QBatch>],
    (a, b, out): (usize, usize, usize),
    f: impl Fn(f64, f64) -> f64,
) -> Step {
    let get = |i: usize| acts[i].as_ref().expect("the tape keeps every activation");
    let (qa, qb, qo) = (g.acts[a].q, g.acts[b].q, g.acts[out].q);
    assert!(!qo.signed);
    let ys = &get(out).data;
    let mut s = Step {
        max: 0,
        off: 0,
        off_not_at_tie: 0,
        total: ys.len(),
    };
    for ((&x, &y), &o) in get(a).data.iter().zip(&get(b).data).zip(ys) {
        let v = f(qa.dequantize(x) as f64, qb.dequantize(y) as f64);
        let want = qo.quantize(v as f32) as i32;
        let d = (o as i32 - want).abs();
        s.max = s.max.max(d);
        if d > 0 {
            s.off += 1;
            let t = v / qo.scale as f64;
            s.off_not_at_tie += ((t - t.floor() - 0.5).abs() > 1e-3) as usize;
        }
    }
    s
}

#[test]
fn a_quantized_sub_and_a_div_of_two_activations_follow_onnx() {
    // x [N,2,3,3] → Q/DQ → 1×1 int8 convs a, b (per-channel scales), each closed by its own
    // QuantizeLinear → d = Q(Sub(DQ a, DQ b)); g = Q(1 + Sigmoid(DQ b)); y = Q(Div(DQ d, DQ g))
    // → Flatten: the fixture's pattern, with zero points away from 0 so both signs occur.
    let (ci, h, c) = (2, 3, 3);
    let s_in = 1.0 / 255.0;
    let (s_a, z_a, s_b, z_b) = (0.012f32, 120, 0.015f32, 131);
    let (s_d, z_d, s_g, z_g, s_y, z_y) = (0.02f32, 128, 2.0f32 / 255.0, 0, 0.011f32, 125);
    let mut r = Rng(0x5ab_d1f);
    let mut b = B::new(ci, h, h);
    let x = b.qdq("x", s_in, 0, false);
    let mut weights = |b: &mut B| {
        let w: Vec<i8> = (0..c * ci).map(|_| r.int(-127, 127) as i8).collect();
        let s: Vec<f32> = (0..c).map(|_| r.float(0.004, 0.012)).collect();
        let name = b.dq_weights(&[c, ci, 1, 1], &w, &s, 0);
        let real: Vec<f64> = (0..c * ci)
            .map(|k| (w[k] as f32 * s[k / ci]) as f64)
            .collect();
        (name, real)
    };
    let (wa, ra) = weights(&mut b);
    let (wb, rb) = weights(&mut b);
    let k1 = || vec![("kernel_shape", A::Is(vec![1, 1]))];
    let ca = b.node("Conv", &[&x, &wa], k1());
    let a = b.qdq(&ca, s_a, z_a, false);
    let cb = b.node("Conv", &[&x, &wb], k1());
    let bq = b.qdq(&cb, s_b, z_b, false);
    let d = b.node("Sub", &[&a, &bq], vec![]);
    let d = b.qdq(&d, s_d, z_d, false);
    let sg = b.node("Sigmoid", &[&bq], vec![]);
    let one = b.f32s(&[], &[1.0]);
    let g = b.node("Add", &[&sg, &one], vec![]);
    let g = b.qdq(&g, s_g, z_g, false);
    let y = b.node("Div", &[&d, &g], vec![]);
    let y = b.qdq(&y, s_y, z_y, false);
    let out = b.node("Flatten", &[&y], vec![]);
    let g = qforget::onnx::import(&b.model(&out), Path::new("sub_div_q.onnx")).unwrap();
    let k = kinds(&g);
    eprintln!("quantized Sub/Div graph: {k:?}");
    for want in ["sub", "div", "quantize"] {
        assert!(k.contains(&want), "{want} missing from {k:?}");
    }
    // The Sub is an integer layer (bytes in, bytes out); the Div writes a float activation.
    let sub = g.layers.iter().find(|l| l.op.kind() == "sub").unwrap();
    assert!(!g.acts[sub.output].float);
    let div = g.layers.iter().find(|l| l.op.kind() == "div").unwrap();
    assert!(g.acts[div.output].float);
    let quantize = g.layers.iter().find(|l| l.inputs == [div.output]).unwrap();

    let n = 16;
    let len = ci * h * h;
    let imgs = images(&mut r, n, len);
    // Each step on its own inputs: the Sub as a quantized Add with the second term negated
    // (ratios of scales, as onnxruntime's QLinearAdd), the Div in f32 then QuantizeLinear.
    let Tape::Quant(acts) = g.forward_tape(&imgs, n).unwrap() else {
        panic!("an integer tape")
    };
    let ids = (sub.inputs[0], sub.inputs[1], sub.output);
    let s = step(&g, &acts, ids, |a, b| a - b);
    eprintln!("Sub step against onnxruntime's definition: {s:?}");
    assert_eq!(s.total, n * c * h * h);
    assert!(s.max <= 1 && s.off_not_at_tie == 0, "Sub: {s:?}");
    let ids = (div.inputs[0], div.inputs[1], quantize.output);
    let s = step(&g, &acts, ids, |a, b| a / b);
    eprintln!("Div step against onnxruntime's definition: {s:?}");
    assert!(s.max == 0, "Div: {s:?}");

    // End to end against the definition: a step's 1-LSB difference may grow by the ratio of
    // scales of the steps after it (here s_d / (g · s_y) < 2).
    let got = g.forward(&imgs, n).unwrap();
    let (mut max_d, mut exact, mut total, mut negative) = (0, 0, 0, 0);
    for i in 0..n {
        let xs = input(&imgs[i * len..(i + 1) * len], ci, h);
        let conv1 = |w: &[f64]| conv(&xs, w, c, [1, 1], 1, [0; 4], 1, 1, &vec![0.0; c]);
        let ad = conv1(&ra).map(|v| fq(v, s_a, z_a, false));
        let bd = conv1(&rb).map(|v| fq(v, s_b, z_b, false));
        let want: Vec<i32> = (0..c * h * h)
            .map(|j| {
                let diff = ad.v[j] - bd.v[j];
                negative += (diff < 0.0) as usize;
                let dd = fq(diff, s_d, z_d, false);
                let gd = fq(1.0 + sigmoid(bd.v[j]), s_g, z_g, false);
                quant(dd / gd, s_y, z_y, false)
            })
            .collect();
        for (a, e) in got.model_row(i).iter().zip(&want) {
            max_d = max_d.max((a - e).abs());
            exact += (a == e) as usize;
            total += 1;
        }
    }
    let share = exact as f64 / total as f64;
    eprintln!(
        "quantized Sub → Div: {total} values ({negative} negative differences), max |Δ| {max_d} \
         LSB, {:.2} % exact against f64",
        100.0 * share
    );
    assert!(negative > 0 && negative < total, "both signs: {negative}");
    assert!(
        max_d <= 2 && share >= 0.95,
        "max |Δ| {max_d}, exact {share}"
    );
    super::grads::fd_check("sub_div_q", &g, &imgs, n);
}

#[test]
fn a_quantized_sub_of_a_constant_follows_onnx() {
    // x [N,2,3,3] → Q/DQ → 1×1 int8 conv → Q/DQ a → Sub(DQ a, DQ c) with c an int8 constant of
    // one value per channel ([C,1,1], as onnxruntime's quantizer writes a Sub's initializer
    // when Sub is among the op types it quantizes) → Q → Flatten.
    let (ci, h, c) = (2, 3, 3);
    let (s_a, z_a, s_c, s_y, z_y) = (0.012f32, 120, 0.01f32, 0.015f32, 128);
    let mut r = Rng(0xc0_57a);
    let mut b = B::new(ci, h, h);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let w: Vec<i8> = (0..c * ci).map(|_| r.int(-127, 127) as i8).collect();
    let ws: Vec<f32> = (0..c).map(|_| r.float(0.004, 0.012)).collect();
    let wn = b.dq_weights(&[c, ci, 1, 1], &w, &ws, 0);
    let conv1 = b.node(
        "Conv",
        &[&x, &wn],
        vec![("kernel_shape", A::Is(vec![1, 1]))],
    );
    let a = b.qdq(&conv1, s_a, z_a, false);
    let cq: Vec<i8> = vec![-90, 7, 101];
    let cn = b.dq_weights(&[c, 1, 1], &cq, &[s_c], 0);
    let d = b.node("Sub", &[&a, &cn], vec![]);
    let y = b.qdq(&d, s_y, z_y, false);
    let out = b.node("Flatten", &[&y], vec![]);
    let g = qforget::onnx::import(&b.model(&out), Path::new("sub_const.onnx")).unwrap();
    let k = kinds(&g);
    eprintln!("Sub of a constant: {k:?}");
    let sub = g
        .layers
        .iter()
        .find(|l| l.op.kind() == "sub")
        .expect("a sub layer");
    assert_eq!(
        sub.inputs.len(),
        1,
        "the constant is the layer's own operand"
    );

    let n = 16;
    let len = ci * h * h;
    let imgs = images(&mut r, n, len);
    let Tape::Quant(acts) = g.forward_tape(&imgs, n).unwrap() else {
        panic!("an integer tape")
    };
    let get = |i: usize| acts[i].as_ref().expect("the tape keeps every activation");
    let (qa, qo) = (g.acts[sub.inputs[0]].q, g.acts[sub.output].q);
    let (xs, ys) = (&get(sub.inputs[0]).data, &get(sub.output).data);
    let (mut max, mut off, mut off_not_at_tie) = (0, 0, 0);
    for (i, (&xa, &yo)) in xs.iter().zip(ys).enumerate() {
        // NHWC: channel i mod c; onnxruntime: DequantizeLinear of both in f32, f32 Sub,
        // QuantizeLinear (round half to even).
        let cv = (cq[i % c] as f32 * s_c) as f64;
        let v = qa.dequantize(xa) as f64 - cv;
        let want = qo.quantize(v as f32) as i32;
        let dlt = (yo as i32 - want).abs();
        max = max.max(dlt);
        if dlt > 0 {
            off += 1;
            let t = v / qo.scale as f64;
            off_not_at_tie += ((t - t.floor() - 0.5).abs() > 1e-3) as usize;
        }
    }
    eprintln!("Sub of a constant against onnxruntime's definition: max {max} LSB, {off} of {} off ({off_not_at_tie} not at a tie)", ys.len());
    assert_eq!(ys.len(), n * c * h * h);
    assert!(
        max <= 1 && off_not_at_tie == 0,
        "max {max}, {off_not_at_tie} off not at a tie"
    );
    // The forward reads the constant as negated: outputs below the activation's own value.
    let below = xs
        .iter()
        .zip(ys)
        .enumerate()
        .filter(|(i, (&xa, &yo))| {
            cq[i % c] > 0 && qo.dequantize(yo) < qa.dequantize(xa) - 0.5 * s_c * cq[i % c] as f32
        })
        .count();
    assert!(below > 0, "a positive constant lowers the output");
    super::grads::fd_check("sub_const", &g, &imgs, n);

    // The reverse order is refused by name.
    let err = refusal("const_minus_x.onnx", |b| {
        let x = b.qdq("x", 1.0 / 255.0, 0, false);
        let cn = b.dq_weights(&[1, 1, 1], &[5], &[0.01], 0);
        let d = b.node("Sub", &[&cn, &x], vec![]);
        b.qdq(&d, 0.01, 128, false)
    });
    assert!(
        err.contains("Sub")
            && err.contains("constant minus an activation")
            && err.contains("const_minus_x.onnx"),
        "{err}"
    );
}

#[test]
fn a_float_sub_and_divs_follow_onnx() {
    // x [N,2,4,4] → Q/DQ → ConvA (float, pad 1) → Relu = r; t = ConvB(r); d = Sub(r, t);
    // s = 1 + Sigmoid(GlobalAveragePool(t)) ([N,C,1,1]); q = Div(d, s) (one divisor per
    // channel); e = Div(q, 1.5 + Sigmoid(t)) (equal shapes) → Flatten → Gemm → float logits.
    let (ci, h, c, classes) = (2, 4, 3, 5);
    let mut b = B::new(ci, h, h);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let mut r = Rng(0xd1_f10a7);
    let mut rand = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| r.float(-a, a)).collect() };
    let (wa, ba) = (rand(c * ci * 9, 0.5), rand(c, 0.2));
    let (wb, bb) = (rand(c * c * 9, 0.4), rand(c, 0.2));
    let (wf, bf) = (rand(classes * c * h * h, 0.5), rand(classes, 0.1));
    let k3 = || {
        vec![
            ("kernel_shape", A::Is(vec![3, 3])),
            ("pads", A::Is(vec![1, 1, 1, 1])),
        ]
    };
    let (wan, ban) = (b.f32s(&[c, ci, 3, 3], &wa), b.f32s(&[c], &ba));
    let ca = b.node("Conv", &[&x, &wan, &ban], k3());
    let rl = b.node("Relu", &[&ca], vec![]);
    let (wbn, bbn) = (b.f32s(&[c, c, 3, 3], &wb), b.f32s(&[c], &bb));
    let t = b.node("Conv", &[&rl, &wbn, &bbn], k3());
    let d = b.node("Sub", &[&rl, &t], vec![]);
    let gp = b.node("GlobalAveragePool", &[&t], vec![]);
    let sg = b.node("Sigmoid", &[&gp], vec![]);
    let one = b.f32s(&[], &[1.0]);
    let s = b.node("Add", &[&one, &sg], vec![]);
    let q = b.node("Div", &[&d, &s], vec![]);
    let st = b.node("Sigmoid", &[&t], vec![]);
    let k15 = b.f32s(&[], &[1.5]);
    let s2 = b.node("Add", &[&st, &k15], vec![]);
    let e = b.node("Div", &[&q, &s2], vec![]);
    let fl = b.node("Flatten", &[&e], vec![]);
    let (wfn, bfn) = (b.f32s(&[classes, c * h * h], &wf), b.f32s(&[classes], &bf));
    let out = b.node("Gemm", &[&fl, &wfn, &bfn], vec![("transB", A::I(1))]);
    let g = qforget::onnx::import(&b.model(&out), Path::new("sub_div_f.onnx")).unwrap();
    let k = kinds(&g);
    eprintln!("float Sub/Div graph: {k:?}");
    assert!(g.real_output);
    assert_eq!(k.iter().filter(|&&k| k == "div").count(), 2, "{k:?}");
    assert!(k.contains(&"sub"), "{k:?}");

    let n = 6;
    let len = ci * h * h;
    let mut r = Rng(0xf17);
    let imgs = images(&mut r, n, len);
    let got = g.forward(&imgs, n).unwrap();
    let f64s = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
    let mut worst = 0f64;
    let plane = h * h;
    for i in 0..n {
        let xs = input(&imgs[i * len..(i + 1) * len], ci, h);
        let rr = conv(&xs, &f64s(&wa), c, [3, 3], 1, [1; 4], 1, 1, &f64s(&ba)).map(|v| v.max(0.0));
        let tt = conv(&rr, &f64s(&wb), c, [3, 3], 1, [1; 4], 1, 1, &f64s(&bb));
        let gate: Vec<f64> = (0..c)
            .map(|k| {
                1.0 + sigmoid(tt.v[k * plane..(k + 1) * plane].iter().sum::<f64>() / plane as f64)
            })
            .collect();
        let ee: Vec<f64> = (0..c * plane)
            .map(|j| (rr.v[j] - tt.v[j]) / gate[j / plane] / (1.5 + sigmoid(tt.v[j])))
            .collect();
        let want: Vec<f64> = (0..classes)
            .map(|o| {
                let row = &wf[o * c * plane..(o + 1) * c * plane];
                row.iter().zip(&ee).map(|(&w, v)| w as f64 * v).sum::<f64>() + bf[o] as f64
            })
            .collect();
        let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        for (a, e) in got.real_row(i).iter().zip(&want) {
            worst = worst.max((*a as f64 - e).abs() / scale);
        }
    }
    eprintln!("float Sub → Div → Div: max relative |Δ| {worst:.2e} against f64");
    assert!(worst < 1e-5, "{worst}");
    super::grads::fd_check("sub_div_f", &g, &imgs, n);
}

/// The error importing the model built by `build` (as file `file`), which must fail.
fn refusal(file: &str, build: impl Fn(&mut B) -> String) -> String {
    let mut b = B::new(1, 2, 2);
    let out = build(&mut b);
    qforget::onnx::import(&b.model(&out), Path::new(file))
        .unwrap_err()
        .to_string()
}

#[test]
fn sub_and_div_of_other_shapes_are_refused_by_name() {
    // Two float results of shapes [3] and [2].
    let gemms = |b: &mut B| {
        let x = b.qdq("x", 1.0 / 255.0, 0, false);
        let f = b.node("Flatten", &[&x], vec![]);
        let w1 = b.f32s(&[3, 4], &[0.1; 12]);
        let g1 = b.node("Gemm", &[&f, &w1], vec![("transB", A::I(1))]);
        let w2 = b.f32s(&[2, 4], &[0.2; 8]);
        let g2 = b.node("Gemm", &[&f, &w2], vec![("transB", A::I(1))]);
        (g1, g2)
    };
    let err = refusal("sub_shapes.onnx", |b| {
        let (g1, g2) = gemms(b);
        b.node("Sub", &[&g1, &g2], vec![])
    });
    for part in ["sub_shapes.onnx", "Sub", "node_Sub", "equal shapes"] {
        assert!(err.contains(part), "{err}");
    }
    let err = refusal("div_shapes.onnx", |b| {
        let (g1, g2) = gemms(b);
        b.node("Div", &[&g1, &g2], vec![])
    });
    for part in ["div_shapes.onnx", "Div", "node_Div", "equal shapes"] {
        assert!(err.contains(part), "{err}");
    }
    // Two dequantized activations, [1,2,2] and its pooled [1,1,1]: the quantized Sub.
    let err = refusal("sub_q_shapes.onnx", |b| {
        let x = b.qdq("x", 1.0 / 255.0, 0, false);
        let p = b.node("GlobalAveragePool", &[&x], vec![]);
        let p = b.qdq(&p, 1.0 / 255.0, 0, false);
        let s = b.node("Sub", &[&x, &p], vec![]);
        b.qdq(&s, 0.01, 128, false)
    });
    for part in ["sub_q_shapes.onnx", "Sub", "node_Sub", "equal shapes"] {
        assert!(err.contains(part), "{err}");
    }
    // A per-channel dividend broadcast over a divisor's pixels (only the divisor may be).
    let err = refusal("div_first.onnx", |b| {
        let x = b.qdq("x", 1.0 / 255.0, 0, false);
        let p = b.node("GlobalAveragePool", &[&x], vec![]);
        let p = b.qdq(&p, 1.0 / 255.0, 0, false);
        let d = b.node("Div", &[&p, &x], vec![]);
        b.qdq(&d, 0.01, 0, false)
    });
    for part in ["div_first.onnx", "Div", "node_Div", "equal shapes"] {
        assert!(err.contains(part), "{err}");
    }
}

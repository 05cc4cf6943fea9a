//! Element-wise activations between a DequantizeLinear and a QuantizeLinear (onnxruntime's
//! quantizers leave ELU, SELU, Softplus, Softsign, Mish and opset 20's Gelu in float there):
//! every one of the
//! 256 input bytes against an f64 reference of the ONNX definition, within 1 LSB (f32 `exp`
//! against f64 can round a value on a level boundary the other way).

use std::path::Path;

use super::onnx_builder::{quant, A, B};

#[test]
fn float_activations_match_their_definitions_on_every_byte() {
    let (s_in, z_in, s_out, z_out) = (0.05f32, 128, 0.03f32, 100);
    type Def = fn(f64) -> f64;
    type Case<'a> = (&'a str, Vec<(&'a str, A)>, Def);
    let softplus: Def = |x| (1.0 + x.exp()).ln();
    let cases: [Case; 7] = [
        ("Elu", vec![("alpha", A::F(0.5))], |x| {
            if x >= 0.0 {
                x
            } else {
                0.5 * (x.exp() - 1.0)
            }
        }),
        ("Selu", vec![], |x| {
            1.050_701
                * if x > 0.0 {
                    x
                } else {
                    1.673_263_2 * (x.exp() - 1.0)
                }
        }),
        ("Softplus", vec![], softplus),
        ("Softsign", vec![], |x| x / (1.0 + x.abs())),
        ("Mish", vec![], |x| x * (1.0 + x.exp()).ln().tanh()),
        ("Gelu", vec![], |x| {
            0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
        }),
        ("Gelu", vec![("approximate", A::S("tanh"))], |x| {
            let a = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (a * (x + 0.044715 * x * x * x)).tanh())
        }),
    ];
    for (op, attrs, def) in cases {
        let mut b = B::new(1, 4, 4);
        let x = b.qdq("x", s_in, z_in, false);
        let y = b.node(op, &[&x], attrs);
        let y = b.qdq(&y, s_out, z_out, false);
        let out = b.node("Flatten", &[&y], vec![]);
        let name = format!("{op}.onnx");
        let g = qforget::onnx::import(&b.model(&out), Path::new(&name)).unwrap();
        // 16 images of 16 pixels: the input's 256 bytes (pixel p/255 quantizes to byte p + 0
        // only for s_in = 1/255, so feed pixels whose dequantized byte we compute below).
        let images: Vec<u8> = (0..=255u8).collect();
        let got = g.forward(&images, 16).unwrap();
        let mut worst = 0;
        for (i, &px) in images.iter().enumerate() {
            let xq = quant(px as f64 / 255.0, s_in, z_in, false);
            let xr = s_in as f64 * (xq - z_in) as f64;
            let want = quant(def(xr), s_out, z_out, false);
            let row = got.model_row(i / 16);
            worst = worst.max((row[i % 16] - want).abs());
        }
        assert!(worst <= 1, "{op}: {worst} LSB off");
    }
}

//! Where a layer's trainable parameters live in the ONNX file, so trained values can be written
//! back into the same initializers (export, deltas) without touching anything else.
//!
//! The graph keeps weights in the layout its kernels want (conv rows `[c_out][kh][kw][c_in/g]`,
//! linear rows `[out][in]`) and relative to their zero point (or, where `w − zp` does not fit
//! int8, as the re-centred byte with a weight zero point the kernels subtract; see
//! `crate::kernels::PackedWeights::with_zero_points`); the file keeps them in ONNX layout
//! and type. A binding records the difference, and only layers whose integers map one-to-one onto
//! an initializer get one: a BatchNormalization folded into a conv, or turned into its own
//! per-channel layer, changes what the integers mean, so those layers stay frozen.

use serde::Serialize;

/// How the file stores a layer's weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WeightLayout {
    /// Conv weights `[c_out][c_in/g][kh][kw]`.
    Conv { kh: usize, kw: usize },
    /// `[out][in]` (Gemm with transB = 1).
    OutIn,
    /// `[in][out]` (MatMul, Gemm with transB = 0).
    InOut,
}

/// A layer's weight (and maybe bias) initializers.
#[derive(Debug, Clone, Serialize)]
pub struct ParamBinding {
    /// Name of the weight initializer.
    pub weight: String,
    pub layout: WeightLayout,
    /// The file's weight zero points (one, or one per output channel).
    pub zero_point: Vec<i64>,
    /// True when the file's weights are unsigned (uint8, uint4), else signed.
    pub unsigned: bool,
    /// Bits per weight in the file: 8, or 4 for INT4/UINT4 (the same i8 containers in the graph,
    /// a narrower range).
    pub bits: u32,
    /// Name of an int32 bias initializer stored at scale `s_in · s_w[c]` (the only bias form
    /// that maps one-to-one onto the layer's integer bias); `None`: no trainable bias.
    pub bias: Option<String>,
    /// Name of a float bias initializer that trains in float (a Conv/Gemm bias kept in float,
    /// or the constant of a float bias Add); `None`: none.
    pub float_bias: Option<String>,
    /// The weight is a float initializer the file quantizes at run time (`weight` names it);
    /// its integers are written back as floats (see [`super::float_weight`]). `None`: the file
    /// stores the integers.
    #[serde(skip)]
    pub float_weight: Option<std::sync::Arc<super::float_weight::FloatWeight>>,
}

impl ParamBinding {
    /// Zero point of output channel `c`.
    pub fn zero_point_of(&self, c: usize) -> i64 {
        self.zero_point[if self.zero_point.len() > 1 { c } else { 0 }]
    }

    /// Range of the stored integers: 0..=255 / −128..=127, or 0..=15 / −8..=7 at 4 bits.
    pub fn stored_range(&self) -> (i32, i32) {
        let levels = 1i32 << self.bits.min(8);
        if self.unsigned {
            (0, levels - 1)
        } else {
            (-levels / 2, levels / 2 - 1)
        }
    }

    /// Range of `w − zp` the file's type can hold for channel `c` (training clamps to it, so a
    /// 4-bit weight stays on the file's 4-bit grid).
    pub fn range_of(&self, c: usize) -> (i32, i32) {
        let zp = self.zero_point_of(c) as i32;
        let (lo, hi) = self.stored_range();
        (lo - zp, hi - zp)
    }

    /// File-order weight values (`w + zp`, as i64) from graph-layout weights `w` with `c_out`
    /// output rows of `row` values each (`row = kh·kw·c_in/g` for a conv).
    pub fn to_file_order(&self, w: &[i32], c_out: usize, row: usize) -> Vec<i64> {
        let mut out = vec![0i64; w.len()];
        match self.layout {
            WeightLayout::Conv { kh, kw } => {
                let kk = kh * kw;
                let cin = row / kk.max(1);
                for co in 0..c_out {
                    let zp = self.zero_point_of(co);
                    for k in 0..kk {
                        for ci in 0..cin {
                            out[co * row + ci * kk + k] = w[co * row + k * cin + ci] as i64 + zp;
                        }
                    }
                }
            }
            WeightLayout::OutIn => {
                for (i, (o, &v)) in out.iter_mut().zip(w).enumerate() {
                    *o = v as i64 + self.zero_point_of(i / row.max(1));
                }
            }
            WeightLayout::InOut => {
                for o in 0..c_out {
                    let zp = self.zero_point_of(o);
                    for i in 0..row {
                        out[i * c_out + o] = w[o * row + i] as i64 + zp;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_order_inverts_the_import_permutations() {
        // conv: 2 out, 3 in, 1×2 kernel. File [co][ci][k] value = 100co + 10ci + k.
        let b = ParamBinding {
            weight: "w".into(),
            layout: WeightLayout::Conv { kh: 1, kw: 2 },
            zero_point: vec![0],
            unsigned: false,
            bits: 8,
            bias: None,
            float_bias: None,
            float_weight: None,
        };
        let mut ours = vec![];
        for co in 0..2 {
            for k in 0..2 {
                for ci in 0..3 {
                    ours.push(co * 100 + ci * 10 + k - 100);
                }
            }
        }
        let file = b.to_file_order(&ours, 2, 6);
        let want: Vec<i64> = (0..2)
            .flat_map(|co| {
                (0..3).flat_map(move |ci| (0..2).map(move |k| co * 100 + ci * 10 + k - 100))
            })
            .collect();
        assert_eq!(file, want);
        let t = ParamBinding {
            layout: WeightLayout::InOut,
            zero_point: vec![128],
            unsigned: true,
            ..b
        };
        // ours [out=2][in=3] → file [in][out] + 128
        assert_eq!(
            t.to_file_order(&[0, 1, 2, 3, 4, 5], 2, 3),
            vec![128, 131, 129, 132, 130, 133]
        );
        assert_eq!(t.range_of(0), (-128, 127));
        let u4 = ParamBinding {
            zero_point: vec![7],
            bits: 4,
            ..t.clone()
        };
        assert_eq!(u4.range_of(0), (-7, 8));
        let i4 = ParamBinding {
            zero_point: vec![0],
            unsigned: false,
            ..u4
        };
        assert_eq!(i4.range_of(3), (-8, 7));
    }
}

//! Quantized 2-D convolution: im2col per image and group, one int8 GEMM, i32 bias, requantize.
//!
//! Shapes: input `[n][h][w][c_in]` → output `[n][oh][ow][c_out]`, with
//! `oh = (h + pad_top + pad_bottom − dilation·(kh−1) − 1) / stride + 1` (likewise `ow`).
//! Weights are kept as `[c_out][kh][kw][c_in/group]` rows (the ONNX `[c_out][c_in][kh][kw]`
//! reordered at import) so a row lines up with an im2col patch.

use std::cell::RefCell;

use rayon::prelude::*;
use serde::Serialize;

use super::ort_fix::{OrtRun, Patches};
use super::patch_norms::patch_norms;
use super::qparams::Requant;
use super::tensor::{QBatch, Shape};
use crate::kernels::PackedWeights;

/// Geometry of a convolution (or pooling window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dil_h: usize,
    pub dil_w: usize,
}

impl Window {
    /// The 1×1 window: stride 1, no padding, no dilation.
    pub fn unit() -> Self {
        Window {
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            pads: [0; 4],
            dil_h: 1,
            dil_w: 1,
        }
    }

    /// Input pixel index (`iy·w + ix` in an `s` image) of tap `(ky, kx)` of output pixel
    /// `(oy, ox)`, or `None` where the tap lies in the padding.
    pub(crate) fn tap(
        &self,
        s: Shape,
        (oy, ox): (usize, usize),
        (ky, kx): (usize, usize),
    ) -> Option<usize> {
        let iy = (oy * self.stride_h + ky * self.dil_h) as isize - self.pads[0] as isize;
        let ix = (ox * self.stride_w + kx * self.dil_w) as isize - self.pads[1] as isize;
        (iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize)
            .then(|| iy as usize * s.w + ix as usize)
    }

    /// Output height and width for an input of `h × w`, or `None` if the window does not fit.
    pub fn output_hw(&self, h: usize, w: usize, ceil: bool) -> Option<(usize, usize)> {
        let span_h = self.dil_h * (self.kh - 1) + 1;
        let span_w = self.dil_w * (self.kw - 1) + 1;
        let ph = h + self.pads[0] + self.pads[2];
        let pw = w + self.pads[1] + self.pads[3];
        if ph < span_h || pw < span_w || self.stride_h == 0 || self.stride_w == 0 {
            return None;
        }
        let div = |x: usize, s: usize| if ceil { x.div_ceil(s) } else { x / s };
        Some((
            div(ph - span_h, self.stride_h) + 1,
            div(pw - span_w, self.stride_w) + 1,
        ))
    }
}

thread_local! {
    /// Per-thread im2col and accumulator buffers, so an image does not allocate and zero them.
    static SCRATCH: RefCell<(Vec<u8>, Vec<i32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Run `f` on this thread's im2col and accumulator buffers, `cols` and `acc` long. The callers
/// overwrite every element (im2col and the GEMM), so growing the buffers is the only time they
/// are written twice.
fn with_scratch<R>(cols: usize, acc: usize, f: impl FnOnce(&mut [u8], &mut [i32]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut bufs) => {
            let (c, a) = &mut *bufs;
            c.resize(c.len().max(cols), 0);
            a.resize(a.len().max(acc), 0);
            f(&mut c[..cols], &mut a[..acc])
        }
        // Busy: rayon let this thread pick up more work while a GEMM of the first waits inside
        // a join. Use fresh buffers rather than share.
        Err(_) => f(&mut vec![0u8; cols], &mut vec![0i32; acc]),
    })
}

/// A quantized convolution layer.
#[derive(Debug, Clone)]
pub struct Conv {
    pub window: Window,
    pub group: usize,
    pub in_shape: Shape,
    pub out_shape: Shape,
    /// Input zero point (storage domain); also the padding value, since it means real 0.
    pub in_zero_point: i32,
    /// One packed weight block per group, `c_out/group × (kh·kw·c_in/group)`.
    pub weights: Vec<PackedWeights>,
    /// Per-channel weight scales (length `c_out`, or 1 for per-tensor).
    pub weight_scales: Vec<f32>,
    /// Bits of the file's weights (8, or 4 for INT4/UINT4; the values are i8 either way).
    pub weight_bits: u32,
    /// i32 bias at scale `s_in · s_w[c]`, length `c_out`.
    pub bias: Vec<i32>,
    pub requant: Requant,
    /// Run in onnxruntime's float order instead of the integer GEMM (a 1×1 conv whose output
    /// is quantized per channel; see [`super::OrtOrder`]).
    pub ort_order: Option<super::OrtOrder>,
    /// Give onnxruntime's bytes where its float order rounds the other way (a QDQ conv; see
    /// [`super::OrtFix`]).
    pub ort_fix: Option<super::OrtFix>,
}

impl Conv {
    /// Number of int8 weights.
    pub fn weight_count(&self) -> usize {
        self.weights.iter().map(|w| w.data.len()).sum()
    }

    /// Run on a batch.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        self.forward_as(x, true)
    }

    /// [`Conv::forward`] without the [`super::OrtFix`] recomputation (the integer result, or
    /// a per-channel 1×1 conv's [`super::OrtOrder`] as always): what training runs.
    pub fn forward_integer(&self, x: &QBatch) -> QBatch {
        self.forward_as(x, false)
    }

    /// `exact`: onnxruntime's bytes where an [`super::OrtFix`] is set.
    fn forward_as(&self, x: &QBatch, exact: bool) -> QBatch {
        if let Some(o) = &self.ort_order {
            return self.forward_ort_order(o, x);
        }
        let run = self
            .ort_fix
            .as_ref()
            .filter(|_| exact)
            .map(|f| f.prepare(self));
        self.forward_with(x, run.as_ref())
    }

    fn forward_with(&self, x: &QBatch, run: Option<&OrtRun>) -> QBatch {
        if self.is_depthwise() {
            return self.forward_depthwise(x, run);
        }
        if self.is_pointwise() {
            return self.forward_pointwise(x, run);
        }
        self.forward_grouped_with(x, run)
    }

    /// A 1×1 convolution with stride 1, no padding and one group: each output pixel is the
    /// product of its own input pixel's channels with the weights, so a batch's NHWC input is
    /// already its im2col matrix (`[n·h·w][c_in]`).
    pub(super) fn is_pointwise(&self) -> bool {
        self.window == Window::unit()
            && self.group == 1
            && (self.in_shape.h, self.in_shape.w) == (self.out_shape.h, self.out_shape.w)
    }

    /// [`Conv::forward`] of a pointwise conv: one GEMM per chunk of images, read in place (no
    /// im2col copy), instead of one per image. The same integer sums and the same output stage
    /// per row as [`Conv::forward_grouped`], so the same bytes. Why: the expand and project
    /// convolutions of a MobileNetV2-style network are 1×1, and on a 7×7 map one image is only
    /// 49 GEMM rows, where the per-call packing and the im2col copy cost as much as the sums.
    fn forward_pointwise(&self, x: &QBatch, run: Option<&OrtRun>) -> QBatch {
        /// GEMM rows per call: enough to fill the micro-kernel's row blocks and the cores.
        const ROWS: usize = 1024;
        let (in_len, out_len) = (self.in_shape.len().max(1), self.out_shape.len().max(1));
        let (pixels, c_out) = (self.out_shape.h * self.out_shape.w, self.out_shape.c);
        let per_chunk = (ROWS / pixels.max(1)).max(1);
        let mut out = QBatch::filled(x.n, self.out_shape, 0);
        out.data
            .par_chunks_mut(per_chunk * out_len)
            .zip(x.data.par_chunks(per_chunk * in_len))
            .for_each(|(o, xs)| {
                let m = xs.len() / in_len * pixels;
                with_scratch(0, m * c_out, |_, acc| {
                    crate::profile::gemm(m, xs, self.in_zero_point, &self.weights[0], acc);
                    match run {
                        Some(r) => r.finish_rows(acc, c_out, 0, o, c_out, Patches::Rows(xs)),
                        None => self.requant.apply_rows(acc, c_out, &self.bias, 0, o, c_out),
                    }
                });
            });
        out
    }

    /// [`Conv::forward`] by im2col and one GEMM per image and group (any conv).
    #[cfg(test)]
    pub(crate) fn forward_grouped(&self, x: &QBatch) -> QBatch {
        self.forward_grouped_with(x, None)
    }

    /// [`Conv::forward_grouped`], the output stage onnxruntime's where `run` is given.
    fn forward_grouped_with(&self, x: &QBatch, run: Option<&OrtRun>) -> QBatch {
        let out_len = self.out_shape.len();
        let mut out = QBatch::filled(x.n, self.out_shape, 0);
        out.data
            .par_chunks_mut(out_len.max(1))
            .zip(x.data.par_chunks(self.in_shape.len().max(1)))
            .for_each(|(o, img)| self.forward_one(img, o, run));
        out
    }

    fn forward_one(&self, img: &[u8], out: &mut [u8], run: Option<&OrtRun>) {
        let Shape { c: c_in, .. } = self.in_shape;
        let Shape {
            h: oh,
            w: ow,
            c: c_out,
        } = self.out_shape;
        let cin_g = c_in / self.group;
        let cout_g = c_out / self.group;
        let m = oh * ow;
        let k = self.window.kh * self.window.kw * cin_g;
        with_scratch(m * k, m * cout_g, |cols, acc| {
            self.forward_groups(img, out, cols, acc, run)
        });
    }

    fn forward_groups(
        &self,
        img: &[u8],
        out: &mut [u8],
        cols: &mut [u8],
        acc: &mut [i32],
        run: Option<&OrtRun>,
    ) {
        let c_in = self.in_shape.c;
        let (m, c_out) = (self.out_shape.h * self.out_shape.w, self.out_shape.c);
        let cin_g = c_in / self.group;
        let cout_g = c_out / self.group;
        // The exact forward's patch norms, from the image (see `patch_norms`).
        let mut norms = vec![[0u64; 2]; if run.is_some() { m } else { 0 }];
        for (g, w) in self.weights.iter().enumerate() {
            self.im2col(img, g * cin_g, cin_g, cols);
            crate::profile::gemm(m, cols, self.in_zero_point, w, acc);
            let c0 = g * cout_g;
            let bias = &self.bias[c0..];
            let dst = &mut out[c0..];
            match run {
                Some(r) => {
                    patch_norms(
                        img,
                        self.in_shape,
                        (self.out_shape.h, self.out_shape.w),
                        &self.window,
                        self.in_zero_point,
                        (g * cin_g, cin_g),
                        &mut norms,
                    );
                    r.finish_rows(acc, cout_g, c0, dst, c_out, Patches::Summed(cols, &norms))
                }
                None => self.requant.apply_rows(acc, cout_g, bias, c0, dst, c_out),
            }
        }
    }

    /// Patches of input channels `c0..c0+cn` for every output pixel, `[oh·ow][kh][kw][cn]`.
    pub(crate) fn im2col(&self, img: &[u8], c0: usize, cn: usize, cols: &mut [u8]) {
        im2col(
            img,
            self.in_shape,
            (self.out_shape.h, self.out_shape.w),
            &self.window,
            self.in_zero_point as u8,
            (c0, cn),
            cols,
        );
    }
}

/// Patches of input channels `c0..c0+cn` of `img` (`in_shape`, HWC) for every pixel of an
/// `out_hw` output, `[oh·ow][kh][kw][cn]`; taps in the padding read `pad`.
///
/// A window that lies wholly inside the image and covers every channel with adjacent taps
/// (`dil_w = 1`) copies each of its rows as one run of `kw·c` bytes; only windows that touch the
/// padding go tap by tap (measured: im2col was 9–14 % of an OEU run when every tap was checked).
pub(crate) fn im2col(
    img: &[u8],
    in_shape: Shape,
    out_hw: (usize, usize),
    win: &Window,
    pad: u8,
    (c0, cn): (usize, usize),
    cols: &mut [u8],
) {
    let Shape { h, w, c } = in_shape;
    let run = win.kw * cn;
    let whole_rows = win.dil_w == 1 && cn == c;
    // Exactly the patches: [`copy_run_at`] may write past a run, never past this.
    let cols = &mut cols[..out_hw.0 * out_hw.1 * win.kh * win.kw * cn];
    let (span_h, span_w) = (win.dil_h * (win.kh - 1), win.dil_w * (win.kw - 1));
    let mut idx = 0;
    for oy in 0..out_hw.0 {
        let iy0 = (oy * win.stride_h) as isize - win.pads[0] as isize;
        for ox in 0..out_hw.1 {
            let ix0 = (ox * win.stride_w) as isize - win.pads[1] as isize;
            let inside =
                iy0 >= 0 && ix0 >= 0 && iy0 as usize + span_h < h && ix0 as usize + span_w < w;
            if inside && whole_rows {
                for ky in 0..win.kh {
                    let base = ((iy0 as usize + ky * win.dil_h) * w + ix0 as usize) * c;
                    copy_run_at(cols, idx, img, base, run);
                    idx += run;
                }
                continue;
            }
            for ky in 0..win.kh {
                let iy = iy0 + (ky * win.dil_h) as isize;
                for kx in 0..win.kw {
                    let ix = ix0 + (kx * win.dil_w) as isize;
                    let tap_inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                    if tap_inside {
                        let base = (iy as usize * w + ix as usize) * c + c0;
                        copy_run_at(cols, idx, img, base, cn);
                    } else {
                        cols[idx..idx + cn].fill(pad);
                    }
                    idx += cn;
                }
            }
        }
    }
}

/// `dst[at..at + n]` = `src[from..from + n]`, for writers that go through `dst` in ascending
/// order: a run of up to sixteen bytes with sixteen bytes of room in both slices is copied as
/// one 16-byte block, whose bytes past the run are overwritten by the writes that follow (so
/// every byte ends as its own write left it). A grey first layer's 3-byte runs took three
/// single-byte copies and their bounds checks each; the blocks need no branch on the length.
#[inline(always)]
fn copy_run_at(dst: &mut [u8], at: usize, src: &[u8], from: usize, n: usize) {
    const BLOCK: usize = 16;
    if n <= BLOCK && at + BLOCK <= dst.len() && from + BLOCK <= src.len() {
        let block: [u8; BLOCK] = src[from..from + BLOCK].try_into().expect("16 bytes");
        dst[at..at + BLOCK].copy_from_slice(&block);
    } else {
        copy_run(&mut dst[at..at + n], &src[from..from + n]);
    }
}

/// `dst.copy_from_slice(src)` without a `memcpy` call for runs up to 64 bytes: a first layer on
/// grey images copies runs of `kw` bytes, a 3×3 conv over 16 channels runs of 48, and a call
/// per run cost more than the copy (`memmove` was 11 % of a CNN's `eval`). Runs of 4 to 64
/// bytes are copied as a fixed-size head and tail that overlap in the middle.
#[inline(always)]
fn copy_run(dst: &mut [u8], src: &[u8]) {
    let n = dst.len();
    let src = &src[..n];
    fn ends<const L: usize>(dst: &mut [u8], src: &[u8]) {
        let n = dst.len();
        dst[..L].copy_from_slice(&src[..L]);
        dst[n - L..].copy_from_slice(&src[n - L..]);
    }
    match n {
        0 => {}
        // A byte loop here compiled to a `memcpy` call. One to three bytes: the first, the
        // middle and the last (overlapping where `n < 3`).
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=8 => ends::<4>(dst, src),
        9..=16 => ends::<8>(dst, src),
        17..=32 => ends::<16>(dst, src),
        33..=64 => ends::<32>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

#[cfg(test)]
mod tests {
    use super::{im2col, Shape, Window};
    use proptest::prelude::*;

    /// Tap by tap, straight from the definition.
    fn naive(
        img: &[u8],
        s: Shape,
        o: (usize, usize),
        win: &Window,
        pad: u8,
        c0: usize,
        cn: usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for oy in 0..o.0 {
            for ox in 0..o.1 {
                for ky in 0..win.kh {
                    for kx in 0..win.kw {
                        let iy =
                            (oy * win.stride_h + ky * win.dil_h) as isize - win.pads[0] as isize;
                        let ix =
                            (ox * win.stride_w + kx * win.dil_w) as isize - win.pads[1] as isize;
                        for ch in c0..c0 + cn {
                            let inside =
                                iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize;
                            out.push(if inside {
                                img[(iy as usize * s.w + ix as usize) * s.c + ch]
                            } else {
                                pad
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Bytes from a seed (splitmix64 steps).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    /// A 1×1 conv, stride 1, no padding, from `seed`; its weights have zero points when `asym`.
    fn pointwise(s: Shape, c_out: usize, zp: i32, asym: bool, seed: u64) -> super::Conv {
        use super::super::qparams::Requant;
        use crate::kernels::PackedWeights;
        let w: Vec<i8> = bytes(c_out * s.c, seed ^ 1)
            .iter()
            .map(|&v| v as i8)
            .collect();
        let weights = if asym {
            let zeros = bytes(c_out, seed ^ 2)
                .iter()
                .map(|&v| (v % 9) as i32 - 4)
                .collect();
            PackedWeights::with_zero_points(w, c_out, s.c, zeros)
        } else {
            PackedWeights::new(w, c_out, s.c)
        };
        let real =
            |i: usize, lo: f32, span: f32| lo + span * bytes(1, seed ^ i as u64)[0] as f32 / 255.0;
        super::Conv {
            window: Window::unit(),
            group: 1,
            in_shape: s,
            out_shape: Shape { c: c_out, ..s },
            in_zero_point: zp,
            weights: vec![weights],
            weight_scales: vec![0.01],
            weight_bits: 8,
            bias: bytes(c_out, seed ^ 3)
                .iter()
                .map(|&v| (v as i32 - 128) * 41)
                .collect(),
            requant: Requant {
                multiplier: (0..c_out).map(|i| real(i + 100, 0.0005, 0.004)).collect(),
                offset: vec![],
                float_bias: vec![],
                zero_point: (seed % 200) as i32,
                lo: (seed % 5) as u8,
                hi: 251,
            },
            ort_order: None,
            ort_fix: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A pointwise conv run as one GEMM per chunk of images gives the bytes of the per-image
        /// im2col path (batches of one to several chunks of 1024 rows, a partial chunk last).
        #[test]
        fn pointwise_equals_the_per_image_path(
            n in 1usize..40, h in 1usize..12, w in 1usize..12, c in 1usize..40,
            c_out in 1usize..40, zp in 0i32..256, asym in any::<bool>(), seed in any::<u64>(),
        ) {
            let s = Shape { h, w, c };
            let conv = pointwise(s, c_out, zp, asym, seed);
            prop_assert!(conv.is_pointwise());
            let x = super::QBatch { n, shape: s, data: bytes(n * s.len(), seed ^ 7).into() };
            prop_assert_eq!(conv.forward(&x).data, conv.forward_grouped(&x).data);
        }
    }

    proptest! {
        /// Channels up to 22 so that whole-row runs (`kw·c` bytes) take every copy size of
        /// `copy_run`: single bytes, 4-, 8-, 16- and 32-byte ends, and `memcpy` beyond 64.
        #[test]
        fn im2col_equals_the_definition(
            h in 1usize..9, w in 1usize..9, c in 1usize..23, kh in 1usize..4, kw in 1usize..4,
            sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
            pads in proptest::array::uniform4(0usize..3), groups in 1usize..3, g in 0usize..2,
            seed in any::<u64>(),
        ) {
            let win = Window { kh, kw, stride_h: sh, stride_w: sw, pads, dil_h: dh, dil_w: dw };
            let s = Shape { h, w, c: c * groups };
            let Some(o) = win.output_hw(h, w, false) else { return Ok(()) };
            let img: Vec<u8> = (0..s.len()).map(|i| (seed.wrapping_mul(i as u64 + 7) >> 13) as u8).collect();
            let (c0, cn) = ((g % groups) * c, c);
            let mut cols = vec![0u8; o.0 * o.1 * kh * kw * cn];
            im2col(&img, s, o, &win, 42, (c0, cn), &mut cols);
            prop_assert_eq!(cols, naive(&img, s, o, &win, 42, c0, cn));
        }
    }
}

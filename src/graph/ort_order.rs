//! A 1×1 convolution whose output is quantized per channel, computed in onnxruntime's float
//! order instead of by the integer GEMM.
//!
//! Why: NNCF's QDQ graphs run the convolution in float (`DequantizeLinear → Conv → Clip →
//! QuantizeLinear`), and the integer GEMM plus one requantization lands on the other side of a
//! rounding boundary for a few values in a million, like every QDQ layer here (1 LSB). After a
//! per-channel QuantizeLinear that 1 LSB does not stay small: a channel with a small scale sees
//! an upstream 1-LSB change as several of its own steps, and through a MobileNetV2 the flips
//! grew to 7 LSB at the last conv and changed one top-1 of 10,000 on the NNCF fixture (a logit
//! gap of 0.005). onnxruntime (graph optimizations off) computes such a layer as an SGEMM that
//! adds the products of the dequantized input and weights in input-channel order with fused
//! multiply-adds, adds the float bias, clips, divides by the channel's scale and rounds half to
//! even. Doing exactly that reproduced onnxruntime's bytes on all 25 M values of each of the four
//! such layers of the fixture (given onnxruntime's input), where the integer path differed in
//! 2–5 of a million.
//!
//! A float Gemm/MatMul layer (weights left in float by the quantizer, `super::dense`) runs the
//! same sums, with two details of onnxruntime's packed SGEMM that a 1×1 conv never meets: the
//! weights of a constant matrix are packed in slices of [`PACKED_STRIDE_K`] inputs, each slice
//! summed on its own and added to the output, and Gemm's bias is the output's starting value
//! (`beta = 1`) rather than added at the end. On the fixtures' heads (K = 64 and K = 1568) this
//! order reproduced onnxruntime's float outputs bit for bit; one sum over all of K differed in
//! 94 % of fc1's outputs.
//!
//! The same request still gives the same bytes everywhere: `f32::mul_add` is one IEEE rounding
//! on every platform (a hardware FMA where the CPU has one, an exact software one otherwise).

use rayon::prelude::*;

use super::conv::Conv;
use super::qparams::rounded_byte;
use super::tensor::QBatch;

/// What a conv needs to run in onnxruntime's float order (see the module documentation).
#[derive(Debug, Clone)]
pub struct OrtOrder {
    /// Real step of the (per-tensor) input.
    pub in_scale: f32,
    /// Real step of each output channel.
    pub out_scales: Vec<f32>,
    /// The file's real bias per output channel, used while the layer's requantization holds no
    /// trained float bias (`Requant::float_bias` empty).
    pub bias: Vec<f32>,
}

impl OrtOrder {
    /// Whether conv `c` is a layer this order applies to: 1×1, stride 1, no padding, one group,
    /// no integer bias (the float bias comes from the file).
    pub fn applies_to(c: &Conv) -> bool {
        let w = &c.window;
        w.kh == 1
            && w.kw == 1
            && w.stride_h == 1
            && w.stride_w == 1
            && w.pads == [0; 4]
            && c.group == 1
            && c.bias.iter().all(|&b| b == 0)
    }
}

impl Conv {
    /// [`Conv::forward`] in onnxruntime's float order (`o`: this layer's [`OrtOrder`]).
    pub(crate) fn forward_ort_order(&self, o: &OrtOrder, x: &QBatch) -> QBatch {
        let (k, c_out) = (self.in_shape.c, self.out_shape.c);
        // Dequantized weights, `[k][c_out]` so the inner loop runs over output channels.
        let mut w_t = vec![0f32; k * c_out];
        for (c, row) in self.weights[0].values().chunks_exact(k.max(1)).enumerate() {
            let s = self.scale_of(c);
            for (j, &v) in row.iter().enumerate() {
                w_t[j * c_out + c] = v as f32 * s;
            }
        }
        let rq = &self.requant;
        let p = Pixels {
            sum: OrtSum {
                w_t: w_t.into(),
                k,
                c_out,
                zp_in: self.in_zero_point,
                in_scale: o.in_scale,
                bias: if rq.float_bias.is_empty() {
                    &o.bias
                } else {
                    &rq.float_bias
                },
                block_k: 0,
                bias_first: false,
            },
            out_scales: &o.out_scales,
            zp_out: rq.zero_point as f32,
            lo: rq.lo as f32,
            hi: rq.hi as f32,
        };
        let mut out = QBatch::filled(x.n, self.out_shape, 0);
        // Blocks of pixels (a 1×1 conv treats every pixel alike), a few per thread.
        let block = 256;
        out.data
            .par_chunks_mut(c_out.max(1) * block)
            .zip(x.data.par_chunks(k.max(1) * block))
            .for_each(|(dst, src)| p.run(src, dst));
        out
    }
}

/// The float sums of one layer in onnxruntime's order: `y[c] = Σ_j x[j]·w[j][c]` over the
/// dequantized input `x[j] = (q[j] − zp_in)·s_in`, one fused multiply-add per input in input
/// order, in slices of `block_k` inputs (0: one slice) added to the output one after the other;
/// the bias is the output's starting value (`bias_first`, onnxruntime's Gemm) or added after
/// the sums (its Conv, and MatMul followed by Add).
pub(crate) struct OrtSum<'a> {
    /// Weights `[k][c_out]`, so the inner loop runs over output channels.
    pub w_t: std::borrow::Cow<'a, [f32]>,
    pub k: usize,
    pub c_out: usize,
    pub zp_in: i32,
    pub in_scale: f32,
    /// Real bias per output channel.
    pub bias: &'a [f32],
    pub block_k: usize,
    pub bias_first: bool,
}

impl OrtSum<'_> {
    /// Call `emit(row, y)` with the real outputs `y` (bias included) of every row of `src`
    /// (`[row][k]` bytes).
    pub fn rows(&self, src: &[u8], emit: impl FnMut(usize, &[f32])) {
        self.rows_with(Simd::detect(), src, emit)
    }

    /// [`OrtSum::rows`] by the portable loop (the vector path's reference in tests).
    #[cfg(test)]
    fn rows_portable(&self, src: &[u8], emit: &mut impl FnMut(usize, &[f32])) {
        self.rows_with(Simd::Portable, src, emit)
    }

    fn rows_with(&self, simd: Simd, src: &[u8], mut emit: impl FnMut(usize, &[f32])) {
        let k = self.k.max(1);
        let mut xs = vec![0f32; k * ROWS];
        let mut y = vec![0f32; self.c_out.max(1) * ROWS];
        for (b, px) in src.chunks(k * ROWS).enumerate() {
            let n = px.len() / k;
            for (x, p) in xs.chunks_exact_mut(k).zip(px.chunks_exact(k)) {
                self.dequantize(p, x);
            }
            self.block(simd, &xs[..n * k], b * ROWS, &mut y, &mut emit);
        }
    }

    /// [`OrtSum::rows`] on real inputs (`[row][k]`, a float segment's activation), which
    /// onnxruntime reads as they are (`zp_in` and `in_scale` unused).
    pub fn rows_real(&self, src: &[f32], mut emit: impl FnMut(usize, &[f32])) {
        self.rows_real_with(Simd::detect(), src, &mut emit)
    }

    fn rows_real_with(&self, simd: Simd, src: &[f32], mut emit: impl FnMut(usize, &[f32])) {
        let k = self.k.max(1);
        let mut y = vec![0f32; self.c_out.max(1) * ROWS];
        for (b, xs) in src.chunks(k * ROWS).enumerate() {
            let n = xs.len() / k;
            self.block(simd, &xs[..n * k], b * ROWS, &mut y, &mut emit);
        }
    }

    /// [`OrtSum::rows_real`] on rows that are not stored as rows: input `j` of row `r` is
    /// `img[bases[r] + koff[j]]` (a convolution's patches read in place from a padded image,
    /// [`super::float_conv`]). The same sums, value for value, as on the gathered rows.
    pub fn rows_gathered(
        &self,
        img: &[f32],
        bases: &[usize],
        koff: &[usize],
        emit: impl FnMut(usize, &[f32]),
    ) {
        self.rows_gathered_with(Simd::detect(), img, bases, koff, emit)
    }

    fn rows_gathered_with(
        &self,
        simd: Simd,
        img: &[f32],
        bases: &[usize],
        koff: &[usize],
        mut emit: impl FnMut(usize, &[f32]),
    ) {
        let (k, c_out) = (self.k.max(1), self.c_out.max(1));
        assert_eq!(koff.len(), self.k, "one offset per input");
        let mut y = vec![0f32; c_out * ROWS];
        #[cfg(target_arch = "x86_64")]
        if simd != Simd::Portable {
            for (b, block) in bases.chunks(ROWS).enumerate() {
                self.vec_block(block.len(), b * ROWS, &mut y, &mut emit, |r, take, yb| {
                    let at = |i: usize| block[r + i];
                    // SAFETY: the CPU has what `simd` names (`Simd::detect`); each source has
                    // `take` rows of `k` inputs (read with bounds checks) and `yb` holds
                    // `take` rows of `c_out` outputs.
                    unsafe {
                        match take {
                            6 => self.rows_vec(simd, &Gather::<6>::new(img, at, koff), yb),
                            4 => self.rows_vec(simd, &Gather::<4>::new(img, at, koff), yb),
                            2 => self.rows_vec(simd, &Gather::<2>::new(img, at, koff), yb),
                            _ => self.rows_vec(simd, &Gather::<1>::new(img, at, koff), yb),
                        }
                    }
                });
            }
            return;
        }
        // Portable: each block's rows gathered, then the row loop.
        let mut xs = vec![0f32; k * ROWS];
        for (b, block) in bases.chunks(ROWS).enumerate() {
            for (x, &base) in xs.chunks_exact_mut(k).zip(block) {
                for (v, &o) in x.iter_mut().zip(koff) {
                    *v = img[base + o];
                }
            }
            self.block(simd, &xs[..block.len() * k], b * ROWS, &mut y, &mut emit);
        }
    }

    /// The outputs of up to [`ROWS`] input rows `xs` (real values, `[row][k]`), emitted as rows
    /// `first..`; `y` is room for [`ROWS`] output rows. On the vector path each weight load
    /// serves up to six rows; every output is still the same sequence of fused
    /// multiply-adds as the one-row loop, so the values do not depend on the blocking.
    fn block(
        &self,
        simd: Simd,
        xs: &[f32],
        first: usize,
        y: &mut [f32],
        emit: &mut impl FnMut(usize, &[f32]),
    ) {
        let (k, c_out) = (self.k.max(1), self.c_out.max(1));
        let n = xs.len() / k;
        #[cfg(target_arch = "x86_64")]
        if simd != Simd::Portable {
            self.vec_block(n, first, y, emit, |r, take, yb| {
                let xb = &xs[r * k..][..take * k];
                let rows = |i: usize| &xb[i * k..][..k];
                // SAFETY: the CPU has what `simd` names (`Simd::detect`); each source holds
                // `take` rows of `k` inputs and `yb` `take` rows of `c_out` outputs.
                unsafe {
                    match take {
                        6 => self.rows_vec(simd, &Rows::<6>(std::array::from_fn(rows)), yb),
                        4 => self.rows_vec(simd, &Rows::<4>(std::array::from_fn(rows)), yb),
                        2 => self.rows_vec(simd, &Rows::<2>(std::array::from_fn(rows)), yb),
                        _ => self.rows_vec(simd, &Rows::<1>(std::array::from_fn(rows)), yb),
                    }
                }
            });
            return;
        }
        let y = &mut y[..n * c_out];
        for (r, (x, y)) in xs
            .chunks_exact(k)
            .zip(y.chunks_exact_mut(c_out))
            .enumerate()
        {
            self.row(simd, x, y);
            emit(first + r, y);
        }
    }

    /// The vector path's frame for `n` rows emitted as rows `first..` (`y`: room for them):
    /// every output row started, `group(r, take, yb)` summing rows `r..r + take` into their
    /// outputs `yb` for each [`row_groups`] group, every row ended, then emitted. Stored rows
    /// ([`OrtSum::block`]) and rows gathered from an image ([`OrtSum::rows_gathered`]) differ
    /// only in `group`'s source.
    #[cfg(target_arch = "x86_64")]
    fn vec_block(
        &self,
        n: usize,
        first: usize,
        y: &mut [f32],
        emit: &mut impl FnMut(usize, &[f32]),
        mut group: impl FnMut(usize, usize, &mut [f32]),
    ) {
        let c_out = self.c_out.max(1);
        let y = &mut y[..n * c_out];
        y.chunks_exact_mut(c_out).for_each(|y| self.start(y));
        row_groups(n, |r, take| {
            group(r, take, &mut y[r * c_out..][..take * c_out])
        });
        y.chunks_exact_mut(c_out).for_each(|y| self.end(y));
        for (r, y) in y.chunks_exact(c_out).enumerate() {
            emit(first + r, y);
        }
    }

    /// The outputs `y` of one input row `xs` (real values).
    #[inline(always)]
    fn row(&self, simd: Simd, xs: &[f32], y: &mut [f32]) {
        self.start(y);
        #[cfg(target_arch = "x86_64")]
        if simd != Simd::Portable {
            // SAFETY: the CPU has what `simd` names (`Simd::detect`); one row of `k` inputs
            // and `c_out` outputs.
            unsafe { self.rows_vec(simd, &Rows::<1>([xs]), y) };
            self.end(y);
            return;
        }
        let _ = simd;
        for (s, e) in self.slices() {
            self.rest(xs, y, 0, s, e);
        }
        self.end(y);
    }

    /// The input slices `[start, end)` of the sums.
    fn slices(&self) -> impl Iterator<Item = (usize, usize)> {
        let (k, b) = (self.k, self.block_k);
        let step = if b == 0 { k.max(1) } else { b };
        (0..k).step_by(step).map(move |s| (s, (s + step).min(k)))
    }

    /// The output's starting value.
    #[inline(always)]
    fn start(&self, y: &mut [f32]) {
        if self.bias_first {
            y.copy_from_slice(self.bias);
        } else {
            y.fill(0.0);
        }
    }

    /// The bias, unless it was the starting value.
    #[inline(always)]
    fn end(&self, y: &mut [f32]) {
        if !self.bias_first {
            for (v, &b) in y.iter_mut().zip(self.bias) {
                *v += b;
            }
        }
    }

    #[inline(always)]
    fn dequantize(&self, px: &[u8], xs: &mut [f32]) {
        for (x, &b) in xs.iter_mut().zip(px) {
            *x = (b as i32).wrapping_sub(self.zp_in) as f32 * self.in_scale;
        }
    }

    /// The sums of `R` rows by the vector path `simd`: output channels by 32 with AVX-512 where
    /// the CPU has it, the rest (or all) by [`OrtSum::rows_fma`].
    ///
    /// # Safety
    /// The CPU must have what `simd` names (not [`Simd::Portable`]); `x` has `R` rows of `k`
    /// inputs, `y` holds `R` rows of `c_out` outputs.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn rows_vec<const R: usize>(&self, simd: Simd, x: &impl Src<R>, y: &mut [f32]) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            let from = if simd == Simd::Avx512 {
                self.rows_fma512(x, y)
            } else {
                0
            };
            self.rows_fma(x, y, from);
        }
    }

    /// [`OrtSum::rows_fma`] with AVX-512 on the output channels `0..32·⌊c_out/32⌋`, which it
    /// returns the end of: thirty-two channels at a time in two registers per row, each lane
    /// the same chain of fused multiply-adds in input order (so the same values as the AVX2
    /// path and the portable loop; twice the lanes per instruction).
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `x` has `R` rows of `k` inputs, `y` holds `R` rows of
    /// `c_out` outputs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_fma512<const R: usize>(&self, x: &impl Src<R>, y: &mut [f32]) -> usize {
        use std::arch::x86_64::{
            _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
            _mm512_storeu_ps,
        };
        const WIDE: usize = 2 * LANES;
        let (k, c_out) = (self.k, self.c_out.max(1));
        debug_assert!(y.len() == R * c_out);
        debug_assert!(self.w_t.len() >= k * c_out);
        let groups = c_out / WIDE;
        for (s, e) in self.slices() {
            for g in 0..groups {
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for j in s..e {
                    // SAFETY: j < k and (g + 1)·32 ≤ c_out, so the 32 floats from
                    // j·c_out + g·32 lie inside `w_t` (`k × c_out`): two unaligned loads.
                    let (w0, w1) = unsafe {
                        let w = self.w_t.as_ptr().add(j * c_out + g * WIDE);
                        (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(LANES)))
                    };
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(x.at(r, j));
                        a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                        a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let yg = &mut y[r * c_out + g * WIDE..][..WIDE];
                    // SAFETY: `yg` holds 32 floats, two unaligned loads and stores of 16.
                    unsafe {
                        let p = yg.as_mut_ptr();
                        _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), a[0]));
                        let q = p.add(LANES);
                        _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), a[1]));
                    }
                }
            }
        }
        groups * WIDE
    }

    /// The sums of `R` rows with AVX2 and FMA, output channels `from..` (`from` a multiple of
    /// sixteen): sixteen output channels at a time in two
    /// registers per row, each lane one fused multiply-add per input, in input order (the values
    /// of the portable loop; the compiler did not vectorize its `mul_add` loops). Each pair of
    /// weight loads serves all `R` rows (one row at a time is bound by those loads).
    ///
    /// # Safety
    /// The CPU must have FMA and AVX2; `x` has `R` rows of `k` inputs, `y` holds `R` rows of
    /// `c_out` outputs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma,avx2")]
    unsafe fn rows_fma<const R: usize>(&self, x: &impl Src<R>, y: &mut [f32], from: usize) {
        use std::arch::x86_64::{
            _mm256_add_ps, _mm256_cmpgt_epi32, _mm256_fmadd_ps, _mm256_loadu_ps,
            _mm256_maskload_ps, _mm256_maskstore_ps, _mm256_set1_epi32, _mm256_set1_ps,
            _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps,
        };
        let (k, c_out) = (self.k, self.c_out.max(1));
        debug_assert!(y.len() == R * c_out);
        debug_assert!(self.w_t.len() >= k * c_out);
        let groups = c_out / LANES;
        for (s, e) in self.slices() {
            for g in from / LANES..groups {
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for j in s..e {
                    // SAFETY: j < k and (g + 1)·LANES ≤ c_out, so the 16 floats from
                    // j·c_out + g·LANES lie inside `w_t` (`k × c_out`): two unaligned loads.
                    let (w0, w1) = unsafe {
                        let w = self.w_t.as_ptr().add(j * c_out + g * LANES);
                        (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)))
                    };
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = _mm256_set1_ps(x.at(r, j));
                        a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let yg = &mut y[r * c_out + g * LANES..][..LANES];
                    // SAFETY: `yg` holds 16 floats, two unaligned loads and stores of 8.
                    unsafe {
                        let p = yg.as_mut_ptr();
                        _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), a[0]));
                        _mm256_storeu_ps(p.add(8), _mm256_add_ps(_mm256_loadu_ps(p.add(8)), a[1]));
                    }
                }
            }
            // The channels past the last group of 16, eight at a time, the last eight masked
            // (a scalar walk down each column was most of an NNCF MobileNetV2's inference:
            // its 24-, 96- and 144-channel layers leave 8 or 16 channels over). Each lane is
            // still its channel's own chain of fused multiply-adds in `j` order.
            let mut t0 = groups * LANES;
            while t0 < c_out {
                let n = (c_out - t0).min(8);
                let mask = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(n as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let mut acc = [_mm256_setzero_ps(); R];
                for j in s..e {
                    // SAFETY: j < k, and only lanes l < n are read, at j·c_out + t0 + l with
                    // t0 + l < c_out: inside `w_t` (`k × c_out`).
                    let w =
                        unsafe { _mm256_maskload_ps(self.w_t.as_ptr().add(j * c_out + t0), mask) };
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps(x.at(r, j)), w, *a);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let yt = &mut y[r * c_out + t0..][..n];
                    // SAFETY: only the `n` lanes of `yt` are read and written.
                    unsafe {
                        let p = yt.as_mut_ptr();
                        let sum = _mm256_add_ps(_mm256_maskload_ps(p, mask), *a);
                        _mm256_maskstore_ps(p, mask, sum);
                    }
                }
                t0 += 8;
            }
        }
    }

    /// Adds the slice `s..e` of the sums of output channels `from..` to `y` (the channels
    /// [`OrtSum::rows_fma`] does not take in groups).
    #[inline(always)]
    fn rest(&self, xs: &[f32], y: &mut [f32], from: usize, s: usize, e: usize) {
        let c_out = self.c_out.max(1);
        for (c, y) in y.iter_mut().enumerate().skip(from) {
            let mut a = 0f32;
            let rows = self.w_t.chunks_exact(c_out).skip(s).take(e - s);
            for (&x, row) in xs[s..e].iter().zip(rows) {
                a = x.mul_add(row[c], a);
            }
            *y += a;
        }
    }
}

/// Calls `f(first row, rows)` over `n` rows: six at a time (twelve accumulators in the vector
/// kernels), the last few by four, two or one.
#[cfg(target_arch = "x86_64")]
fn row_groups(n: usize, mut f: impl FnMut(usize, usize)) {
    let mut r = 0;
    while r < n {
        let take = match n - r {
            6.. => 6,
            4 | 5 => 4,
            2 | 3 => 2,
            _ => 1,
        };
        f(r, take);
        r += take;
    }
}

/// Where the vector kernels read input `j` of row `r` of a block of `R` rows.
#[cfg(target_arch = "x86_64")]
trait Src<const R: usize> {
    fn at(&self, r: usize, j: usize) -> f32;
}

/// Rows stored as rows.
#[cfg(target_arch = "x86_64")]
struct Rows<'a, const R: usize>([&'a [f32]; R]);

#[cfg(target_arch = "x86_64")]
impl<const R: usize> Src<R> for Rows<'_, R> {
    #[inline(always)]
    fn at(&self, r: usize, j: usize) -> f32 {
        self.0[r][j]
    }
}

/// Rows read in place: input `j` of row `r` is `img[base[r] + koff[j]]`.
#[cfg(target_arch = "x86_64")]
struct Gather<'a, const R: usize> {
    img: &'a [f32],
    base: [usize; R],
    koff: &'a [usize],
}

#[cfg(target_arch = "x86_64")]
impl<'a, const R: usize> Gather<'a, R> {
    fn new(img: &'a [f32], base: impl FnMut(usize) -> usize, koff: &'a [usize]) -> Self {
        Gather {
            img,
            base: std::array::from_fn(base),
            koff,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl<const R: usize> Src<R> for Gather<'_, R> {
    #[inline(always)]
    fn at(&self, r: usize, j: usize) -> f32 {
        self.img[self.base[r] + self.koff[j]]
    }
}

/// How [`OrtSum`] computes its sums; every way gives the portable loop's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Portable,
    /// AVX2 with FMA: sixteen output channels per step.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    /// AVX-512F (which has FMA), then AVX2 for the channels past the last 32.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
}

impl Simd {
    /// The widest way this CPU runs.
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("fma") && has!("avx2") {
                return if has!("avx512f") {
                    Simd::Avx512
                } else {
                    Simd::Avx2
                };
            }
        }
        Simd::Portable
    }

    /// Every way this CPU runs, widest first (the tests compare them).
    #[cfg(test)]
    fn all() -> Vec<Simd> {
        match Simd::detect() {
            Simd::Avx512 => vec![Simd::Avx512, Simd::Avx2, Simd::Portable],
            Simd::Avx2 => vec![Simd::Avx2, Simd::Portable],
            Simd::Portable => vec![Simd::Portable],
        }
    }
}

/// One conv's constants for [`Conv::forward_ort_order`]: the sums, then the division by the
/// channel's scale, rounding, zero point and clamp of QuantizeLinear.
pub(crate) struct Pixels<'a> {
    pub sum: OrtSum<'a>,
    pub out_scales: &'a [f32],
    pub zp_out: f32,
    pub lo: f32,
    pub hi: f32,
}

impl Pixels<'_> {
    /// Output bytes `dst` (`[pixel][c_out]`) of input bytes `src` (`[pixel][k]`).
    pub fn run(&self, src: &[u8], dst: &mut [u8]) {
        let c_out = self.sum.c_out.max(1);
        self.sum
            .rows(src, |r, y| self.finish(y, &mut dst[r * c_out..][..c_out]));
    }

    /// Division by the channel's scale, rounding, zero point and clamp of one pixel.
    #[inline(always)]
    fn finish(&self, y: &[f32], d: &mut [u8]) {
        for ((d, &v), &s) in d.iter_mut().zip(y).zip(self.out_scales) {
            *d = rounded_byte(v / s, self.zp_out, self.lo, self.hi);
        }
    }
}

/// The input slice of onnxruntime's packed SGEMM (`MLAS_SGEMM_PACKED_STRIDEK`): a constant
/// weight matrix is packed, and summed, in slices of this many inputs.
pub(crate) const PACKED_STRIDE_K: usize = 256;

/// Input rows per block of [`OrtSum::block`]: [`OrtSum::rows_fma`] sums up to six rows together,
/// with two registers each (twelve accumulators, of sixteen AVX registers).
const ROWS: usize = 6;

/// Output channels [`OrtSum::rows_fma`] sums together (two AVX registers of f32).
#[cfg(target_arch = "x86_64")]
const LANES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_fused_into_the_sum() {
        // a = 1 + 2^-12, both inputs dequantize to a; weights −1 and a. The running sum is
        // −a, then fma(a, a, −a) = 2^-12 + 2^-24 exactly, the bias −2^-12 leaves 2^-24: 4 steps
        // of 2^-26 above the zero point 3. Rounding a·a first (to 1 + 2^-11, a tie to even)
        // would lose the 2^-24 and give the zero point.
        let a = 1.0 + f32::EPSILON * 2048.0;
        assert_eq!(a * a - a, 2f32.powi(-12));
        let bias = [-(2f32.powi(-12))];
        let scales = [2f32.powi(-26)];
        let p = Pixels {
            sum: OrtSum {
                w_t: vec![-1.0, a].into(),
                k: 2,
                c_out: 1,
                zp_in: 10,
                in_scale: a,
                bias: &bias,
                block_k: 0,
                bias_first: false,
            },
            out_scales: &scales,
            zp_out: 3.0,
            lo: 0.0,
            hi: 255.0,
        };
        let mut d = [0u8];
        p.run(&[11, 11], &mut d);
        assert_eq!(d[0], 7);
        let mut e = [0f32];
        p.sum
            .rows_portable(&[11, 11], &mut |_, y: &[f32]| e.copy_from_slice(y));
        assert_eq!(e[0], 2f32.powi(-24));
    }

    /// Random sums of `k` inputs into `c_out` outputs on `n` rows, by the vector path and the
    /// portable one.
    fn both_paths(
        k: usize,
        c_out: usize,
        block_k: usize,
        bias_first: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
        rows_both_paths(50, k, c_out, block_k, bias_first)
    }

    /// [`both_paths`] on `n` rows.
    fn rows_both_paths(
        n: usize,
        k: usize,
        c_out: usize,
        block_k: usize,
        bias_first: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
        let mut state = 0x2545f4914f6cdd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let w_t: Vec<f32> = (0..k * c_out)
            .map(|_| (next() % 255) as f32 * 1e-3 - 0.127)
            .collect();
        let bias: Vec<f32> = (0..c_out)
            .map(|_| (next() % 100) as f32 * 0.01 - 0.5)
            .collect();
        let scales: Vec<f32> = (0..c_out)
            .map(|_| 0.004 + (next() % 50) as f32 * 1e-4)
            .collect();
        let p = Pixels {
            sum: OrtSum {
                w_t: w_t.into(),
                k,
                c_out,
                zp_in: 3,
                in_scale: 0.021,
                bias: &bias,
                block_k,
                bias_first,
            },
            out_scales: &scales,
            zp_out: 5.0,
            lo: 5.0,
            hi: 255.0,
        };
        let src: Vec<u8> = (0..n * k).map(|_| next() as u8).collect();
        let (mut a, mut b) = (vec![0f32; n * c_out], vec![0f32; n * c_out]);
        p.sum
            .rows(&src, |r, y| a[r * c_out..][..c_out].copy_from_slice(y));
        p.sum.rows_portable(&src, &mut |r, y: &[f32]| {
            b[r * c_out..][..c_out].copy_from_slice(y)
        });
        // The real-input path on the same (dequantized) values, vector and portable.
        let real: Vec<f32> = src.iter().map(|&v| (v as i32 - 3) as f32 * 0.021).collect();
        for simd in Simd::all() {
            let mut c = vec![0f32; n * c_out];
            p.sum.rows_real_with(simd, &real, |r, y| {
                c[r * c_out..][..c_out].copy_from_slice(y)
            });
            assert_eq!(c, b, "real inputs, {simd:?}");
            let mut d = vec![0f32; n * c_out];
            p.sum.rows_with(simd, &src, |r, y| {
                d[r * c_out..][..c_out].copy_from_slice(y)
            });
            assert_eq!(d, b, "bytes, {simd:?}");
        }
        // The same rows read in place: row r starts at 3·r of a longer buffer (rows overlap,
        // like a convolution's patches) and input j sits 2·j further.
        let img: Vec<f32> = (0..3 * n + 2 * k).map(|i| real[i % real.len()]).collect();
        let bases: Vec<usize> = (0..n).map(|r| 3 * r).collect();
        let koff: Vec<usize> = (0..k).map(|j| 2 * j).collect();
        let rows: Vec<f32> = bases
            .iter()
            .flat_map(|&b| koff.iter().map(move |&o| b + o))
            .map(|i| img[i])
            .collect();
        let mut want = vec![0f32; n * c_out];
        p.sum.rows_real_with(Simd::Portable, &rows, |r, y| {
            want[r * c_out..][..c_out].copy_from_slice(y)
        });
        for simd in Simd::all() {
            let mut got = vec![0f32; n * c_out];
            p.sum.rows_gathered_with(simd, &img, &bases, &koff, |r, y| {
                got[r * c_out..][..c_out].copy_from_slice(y)
            });
            assert_eq!(got, want, "gathered rows, {simd:?}");
        }
        let mut bytes = vec![0u8; n * c_out];
        p.run(&src, &mut bytes);
        assert!(
            bytes.iter().any(|&v| v > 5 && v < 255),
            "all outputs clamped"
        );
        (a, b, bytes)
    }

    #[test]
    fn vector_path_gives_the_portable_values() {
        // Output channels: two full groups of 16 and a remainder of 5 (one masked tail), one
        // group and 8 + 5 (a whole tail of 8 and a masked one), 24 (one tail of 8), and fewer
        // than 8 (a masked tail alone); for the AVX-512 path, two groups of 32 (none left
        // over), two and 13 (a group of 16 for AVX2, then a masked tail), one and 16 (AVX2's
        // group alone); one slice, and slices of 8 inputs (the last one short)
        // with the bias first. Rows: 50 = 8 blocks of 6 + 2, 53 = 8 blocks of 6 + 4 + 1.
        for (n, c_out) in [50, 53]
            .into_iter()
            .flat_map(|n| [37, 29, 24, 3, 64, 77, 48].map(|c| (n, c)))
        {
            for (k, block_k, bias_first) in [(23, 0, false), (23, 8, true), (23, 8, false)] {
                let (a, b, _) = rows_both_paths(n, k, c_out, block_k, bias_first);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "{n} rows, {c_out} channels, k {k}, slices of {block_k}, bias first {bias_first}"
                );
            }
        }
    }

    #[test]
    fn slices_change_the_sums_as_onnxruntime_does() {
        // Summing in slices rounds differently from one running sum on some values (so the
        // order is not a no-op), and a slice as long as k is one running sum.
        let (one, _, _) = both_paths(40, 37, 0, false);
        let (whole, _, _) = both_paths(40, 37, 40, false);
        let (sliced, _, _) = both_paths(40, 37, 8, false);
        assert_eq!(one, whole);
        assert_ne!(one, sliced);
        let (first, _, _) = both_paths(40, 37, 8, true);
        assert_ne!(sliced, first);
    }
}

//! Sigmoid, Tanh and Erf as onnxruntime computes them on x86-64, to the bit.
//!
//! Why: onnxruntime's CPU kernels for these ops do not call the C library; MLAS evaluates a
//! rational (Sigmoid, Tanh) or piecewise polynomial (Erf) approximation with fused
//! multiply-adds (its FMA3/AVX-512 kernels, chosen on every x86-64 CPU with FMA). Their results
//! differ from the correctly rounded function by a few units in the last place, and a float
//! segment's QuantizeLinear turns a value near a rounding boundary into the other byte: measured
//! on an NNCF network with a float Sigmoid before a QuantizeLinear, 1-LSB differences that moved
//! float logits beyond 1e-4 relative on some rows. Measured against onnxruntime 1.32 (graph
//! optimizations off, Intel Xeon with AVX-512): these formulas gave onnxruntime's bits on all
//! 3,000,001 inputs of a NumPy emulation (a grid over −20..20, normal and uniform samples),
//! where `1/(1+e⁻ˣ)`, `tanh` and `erf` in f32 or f64 differed on 57 %, 52 % and 9 %; the
//! functions below on all 60,009 inputs of the committed reference (the test). onnxruntime on
//! a CPU without FMA (its generic kernels, as on ARM) rounds differently; the x86-64 results
//! are the reference everywhere, as for the other float orders.
//!
//! Each step below is one f32 operation of MLAS's kernel in its order (`mul_add` is the fused
//! multiply-add, one rounding); the coefficients are MLAS's (Eigen's for Sigmoid and Tanh),
//! written as MLAS writes them: their f32 roundings are what onnxruntime multiplies by.
#![allow(clippy::excessive_precision)]

/// Sigmoid (MLAS `MlasComputeLogistic`): `p(x)/q(x) + ½` on `x` clamped to ±18, negative
/// results raised to 0 (the FMA kernel has no upper clamp: a few inputs near 18 give
/// `1 + 2⁻²³`, as onnxruntime does).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    const A: [f32; 5] = [
        4.37031012579801e-11,
        1.15627324459942e-07,
        6.08574864600143e-05,
        8.51377133304701e-03,
        2.48287947061529e-01,
    ];
    const B: [f32; 6] = [
        6.10247389755681e-13,
        5.76102136993427e-09,
        6.29106785017040e-06,
        1.70198817374094e-03,
        1.16817656904453e-01,
        9.93151921023180e-01,
    ];
    let y = odd_ratio(clamp_keep_nan(x, -18.0, 18.0), &A, &B) + 0.5;
    if y < 0.0 {
        0.0
    } else {
        y
    }
}

/// Tanh (MLAS `MlasComputeTanh`): `p(x)/q(x)` on `x` clamped to ±9.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.76076847742355e-16,
        2.00018790482477e-13,
        -8.60467152213735e-11,
        5.12229709037114e-08,
        1.48572235717979e-05,
        6.37261928875436e-04,
        4.89352455891786e-03,
    ];
    const B: [f32; 4] = [
        1.19825839466702e-06,
        1.18534705686654e-04,
        2.26843463243900e-03,
        4.89352518554385e-03,
    ];
    odd_ratio(clamp_keep_nan(x, -9.0, 9.0), &A, &B)
}

/// `v·P(v²) / Q(v²)` in MLAS's steps: each polynomial by Horner's rule from its highest
/// coefficient, the first step `v²·c₀ + c₁`, then `·v² + cᵢ`, each a fused multiply-add; the
/// numerator times `v`, then one division.
#[inline(always)]
fn odd_ratio(v: f32, p: &[f32], q: &[f32]) -> f32 {
    let v2 = v * v;
    let horner = |c: &[f32]| {
        c[2..]
            .iter()
            .fold(v2.mul_add(c[0], c[1]), |acc, &k| acc.mul_add(v2, k))
    };
    horner(p) * v / horner(q)
}

/// Erf (MLAS `MlasComputeErf`): an odd polynomial up to |x| = 0.921875, beyond it
/// `1 − exp(−r(|x|))` with MLAS's own exp (a power of two times a polynomial), the sign put
/// back. The FMA kernel does not clamp |x| (the constant block's 3.725 is unused there): the
/// exp's argument is clamped instead, so large inputs give exactly ±1.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const SPLIT: f32 = 0.921_875;
    const SMALL: [f32; 6] = [
        -5.99104969e-4,
        4.99339588e-3,
        -2.67667342e-2,
        1.12818025e-1,
        -3.76124859e-1,
        1.28379151e-1,
    ];
    const BIG: [f32; 7] = [
        1.72948930e-5,
        -3.83208680e-4,
        3.88393435e-3,
        -2.42545605e-2,
        1.06777847e-1,
        6.34846687e-1,
        1.28717512e-1,
    ];
    const EXP_LOWER: f32 = -88.3762626647949;
    // MLAS's 1.44269504088896341f: the same f32 as the constant.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = -6.93145752e-1;
    const LN2_LO: f32 = -1.42860677e-6;
    const EXP: [f32; 7] = [
        1.38319808e-3,
        8.37550033e-3,
        4.16689515e-2,
        1.66664466e-1,
        4.99999851e-1,
        1.0,
        1.0,
    ];
    // 1.5 · 2²³: adding and subtracting it rounds to an integer (half to even).
    const ROUND: f32 = 12_582_912.0;
    let a = x.abs();
    let r = if a > SPLIT {
        let r = BIG[1..]
            .iter()
            .fold(BIG[0], |r, &c| r.mul_add(a, c))
            .mul_add(a, a);
        let e = (-r).max(EXP_LOWER);
        let n = LOG2E.mul_add(e, ROUND) - ROUND;
        let f = n.mul_add(LN2_HI, e);
        let f = n.mul_add(LN2_LO, f);
        let y = EXP[1..].iter().fold(EXP[0], |y, &c| y.mul_add(f, c));
        1.0 - y * pow2(n)
    } else {
        let s = a * a;
        SMALL[1..]
            .iter()
            .fold(SMALL[0], |r, &c| r.mul_add(s, c))
            .mul_add(a, a)
    };
    if x.is_sign_negative() {
        -r
    } else {
        r
    }
}

/// `2ⁿ` for an integer-valued `n` in −127..=127, built in the exponent field as MLAS does.
#[inline(always)]
fn pow2(n: f32) -> f32 {
    f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `x` clamped to `lo..=hi`, a NaN passed through (as MLAS's max/min order does).
#[inline(always)]
fn clamp_keep_nan(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// One of the functions, to run over a slice ([`apply`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mlas {
    Sigmoid,
    Tanh,
    Erf,
}

/// The function on every value of `y`, compiled with FMA where the CPU has it. Why: the
/// baseline x86-64 target has no FMA instruction, so each `mul_add` above is a library call
/// there (a float segment's Sigmoid ran 2.5× slower than with the old formula); with FMA it is
/// one instruction. A fused multiply-add rounds once either way: the same bits on both paths.
pub(crate) fn apply(f: Mlas, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        return unsafe { apply_fma(f, y) };
    }
    apply_plain(f, y)
}

/// [`apply`] compiled with FMA.
///
/// # Safety
/// The CPU must support FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn apply_fma(f: Mlas, y: &mut [f32]) {
    apply_plain(f, y)
}

#[inline(always)]
fn apply_plain(f: Mlas, y: &mut [f32]) {
    match f {
        Mlas::Sigmoid => y.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Mlas::Tanh => y.iter_mut().for_each(|v| *v = tanh(*v)),
        Mlas::Erf => y.iter_mut().for_each(|v| *v = erf(*v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs and onnxruntime's outputs (1.32, graph optimizations off, x86-64 with FMA), made
    /// by `onnx-models/expected/make_mlas_fns.py`: every function must return the same bits.
    #[test]
    fn every_bit_agrees_with_onnxruntime() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx-models/expected");
        let x: ndarray::Array1<f32> = ndarray_npy::read_npy(root.join("mlas_fns_x.npy")).unwrap();
        type Fn1 = fn(f32) -> f32;
        let fns: [(&str, Fn1); 3] = [("Sigmoid", sigmoid), ("Tanh", tanh), ("Erf", erf)];
        for (op, f) in fns {
            let y: ndarray::Array1<f32> =
                ndarray_npy::read_npy(root.join(format!("mlas_fns_{op}.npy"))).unwrap();
            assert_eq!(x.len(), y.len());
            assert!(x.len() > 50_000);
            let bad: Vec<(f32, f32, f32)> = x
                .iter()
                .zip(&y)
                .filter(|(&x, &y)| f(x).to_bits() != y.to_bits())
                .map(|(&x, &y)| (x, f(x), y))
                .take(5)
                .collect();
            assert!(bad.is_empty(), "{op}: (x, ours, onnxruntime) {bad:?}");
        }
    }

    /// The slice form (FMA-compiled where the CPU has it) gives the scalar functions' bits.
    #[test]
    fn slices_give_the_same_bits() {
        let x: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.0071).collect();
        type Fn1 = fn(f32) -> f32;
        let fns: [(Mlas, Fn1); 3] = [
            (Mlas::Sigmoid, sigmoid),
            (Mlas::Tanh, tanh),
            (Mlas::Erf, erf),
        ];
        for (m, f) in fns {
            let mut y = x.clone();
            apply(m, &mut y);
            for (&a, &b) in x.iter().zip(&y) {
                assert_eq!(f(a).to_bits(), b.to_bits(), "{m:?}({a})");
            }
        }
    }

    /// The approximations stay within a few f32 steps of the functions (so a wrong coefficient
    /// cannot hide behind a reference file made with the same mistake).
    #[test]
    fn close_to_the_functions() {
        for i in -4000..=4000 {
            let x = i as f32 * 0.005;
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - s).abs() < 1e-6, "sigmoid({x})");
            assert!(
                (tanh(x) as f64 - (x as f64).tanh()).abs() < 1e-6,
                "tanh({x})"
            );
            assert!(
                (erf(x) as f64 - libm::erf(x as f64)).abs() < 1e-6,
                "erf({x})"
            );
        }
        assert_eq!(erf(1e30), 1.0);
        assert_eq!(erf(-1e30), -1.0);
        assert!(sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!(sigmoid(-1e30), 0.0);
        assert_eq!(tanh(1e30), 1.0);
    }
}

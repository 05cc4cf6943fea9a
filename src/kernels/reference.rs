//! The definition of the int8 GEMM, written to be obviously right rather than fast. Every
//! kernel is tested against it.

/// `c[i][j] = Σ_k (a[i][k] − a_zp) · b[j][k]`; `a` is `m × k`, `b` is `n × k`, `c` is `m × n`.
pub fn gemm_u8i8(m: usize, n: usize, k: usize, a: &[u8], a_zp: i32, b: &[i8], c: &mut [i32]) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i32;
            for kk in 0..k {
                s += (a[i * k + kk] as i32 - a_zp) * b[j * k + kk] as i32;
            }
            c[i * n + j] = s;
        }
    }
}

/// `c[i][j] = Σ_k (a[i][k] − a_zp) · (b[j][k] − zr[j] − zc[k])`, with `zr` one zero point per
/// row of `b` and `zc` one per column (either may be empty: all 0).
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8i8_zp(
    (m, n, k): (usize, usize, usize),
    a: &[u8],
    a_zp: i32,
    b: &[i8],
    zr: &[i32],
    zc: &[i32],
    c: &mut [i32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i64;
            for kk in 0..k {
                let w = b[j * k + kk] as i64
                    - zr.get(j).copied().unwrap_or(0) as i64
                    - zc.get(kk).copied().unwrap_or(0) as i64;
                s += (a[i * k + kk] as i64 - a_zp as i64) * w;
            }
            c[i * n + j] = s as i32;
        }
    }
}

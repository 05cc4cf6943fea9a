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

//! Fréchet distance between Gaussians fitted to feature sets, in f64.
//!
//! `d² = |μ₁ − μ₂|² + tr C₁ + tr C₂ − 2 tr √(√C₁ C₂ √C₁)`. `√C₁ C₂ √C₁` is symmetric
//! positive semi-definite (unlike `C₁ C₂`), so both square roots come from symmetric
//! eigendecompositions (cyclic Jacobi), with rounding-level negative eigenvalues clamped to 0.

use crate::error::{EvalError, Result};

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    /// Mean, `dim` values.
    pub mean: Vec<f64>,
    /// Covariance, `dim` x `dim` row-major (symmetric).
    pub cov: Vec<f64>,
}

impl GaussianStats {
    /// Wraps a mean and a covariance, checking that the sizes agree and `cov` is symmetric.
    pub fn new(mean: Vec<f64>, cov: Vec<f64>) -> Result<Self> {
        let d = mean.len();
        if d == 0 || cov.len() != d * d {
            return Err(EvalError::Invalid(format!(
                "covariance of {} values does not match a mean of dimension {d}",
                cov.len()
            )));
        }
        for i in 0..d {
            for j in 0..i {
                let (a, b) = (cov[i * d + j], cov[j * d + i]);
                if (a - b).abs() > 1e-9 * (1.0 + a.abs().max(b.abs())) {
                    return Err(EvalError::Invalid(format!(
                        "covariance is not symmetric at ({i}, {j}): {a} vs {b}"
                    )));
                }
            }
        }
        Ok(Self { mean, cov })
    }

    /// Fits the rows of `rows` (n x `dim`, row-major): mean and unbiased covariance
    /// (divided by n − 1). Needs at least two rows.
    pub fn from_rows(rows: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !rows.len().is_multiple_of(dim) || rows.len() / dim < 2 {
            return Err(EvalError::Invalid(format!(
                "{} values are not at least two rows of {dim} features",
                rows.len()
            )));
        }
        let n = rows.len() / dim;
        let mut mean = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0f64; dim * dim];
        let mut centred = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim) {
            for ((c, &x), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = f64::from(x) - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                for j in i..dim {
                    cov[i * dim + j] += ci * centred[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / (n - 1) as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Self { mean, cov })
    }

    /// The feature dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// Eigenvalues and eigenvectors of the symmetric `d` x `d` matrix `m` (row-major) by cyclic
/// Jacobi rotations: returns `(values, vectors)` with eigenvector `k` in column `k` of
/// `vectors` (row-major), so `m = V diag(values) Vᵀ`. Values are not sorted.
pub fn symmetric_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(
        m.len(),
        d * d,
        "symmetric_eigen: {} values for a {d}x{d} matrix",
        m.len()
    );
    let mut a = m.to_vec();
    let mut v = vec![0.0f64; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|p| (p + 1..d).map(move |q| (p, q)))
            .map(|(p, q)| a[p * d + q] * a[p * d + q])
            .sum();
        if off <= 1e-30 * total || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                rotate(&mut a, &mut v, d, p, q);
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// One Jacobi rotation zeroing `a[p][q]` (`A ← Jᵀ A J`, `V ← V J`).
fn rotate(a: &mut [f64], v: &mut [f64], d: usize, p: usize, q: usize) {
    let apq = a[p * d + q];
    if apq == 0.0 {
        return;
    }
    let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
    let t = if theta.abs() > 1e150 {
        0.5 / theta
    } else {
        theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
    };
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    for k in 0..d {
        let (akp, akq) = (a[k * d + p], a[k * d + q]);
        a[k * d + p] = c * akp - s * akq;
        a[k * d + q] = s * akp + c * akq;
    }
    for k in 0..d {
        let (apk, aqk) = (a[p * d + k], a[q * d + k]);
        a[p * d + k] = c * apk - s * aqk;
        a[q * d + k] = s * apk + c * aqk;
    }
    for k in 0..d {
        let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
        v[k * d + p] = c * vkp - s * vkq;
        v[k * d + q] = s * vkp + c * vkq;
    }
}

/// The square root of a symmetric positive semi-definite `d` x `d` matrix (negative
/// eigenvalues, from rounding, are taken as 0).
pub fn sqrt_psd(m: &[f64], d: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(m, d);
    let roots: Vec<f64> = values.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0f64; d * d];
    for i in 0..d {
        for j in i..d {
            let s: f64 = (0..d)
                .map(|k| vectors[i * d + k] * roots[k] * vectors[j * d + k])
                .sum();
            out[i * d + j] = s;
            out[j * d + i] = s;
        }
    }
    out
}

/// `a · b` for `d` x `d` row-major matrices.
fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            if aik != 0.0 {
                for j in 0..d {
                    out[i * d + j] += aik * b[k * d + j];
                }
            }
        }
    }
    out
}

/// The Fréchet distance `d²` between two Gaussians (see the module docs); clamped at 0
/// against rounding. Fails when the dimensions differ.
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64> {
    let d = a.dim();
    if b.dim() != d {
        return Err(EvalError::Invalid(format!(
            "Fréchet distance between features of dimension {d} and {}",
            b.dim()
        )));
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let root_a = sqrt_psd(&a.cov, d);
    let mut middle = matmul(&matmul(&root_a, &b.cov, d), &root_a, d);
    // Symmetrise away rounding before the eigendecomposition.
    for i in 0..d {
        for j in 0..i {
            let s = 0.5 * (middle[i * d + j] + middle[j * d + i]);
            middle[i * d + j] = s;
            middle[j * d + i] = s;
        }
    }
    let (values, _) = symmetric_eigen(&middle, d);
    let trace_root: f64 = values.iter().map(|&l| l.max(0.0).sqrt()).sum();
    Ok((mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * trace_root).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    fn normal_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect()
    }

    /// A random symmetric positive-definite matrix `A Aᵀ + 0.1 I`.
    fn random_spd(d: usize, seed: u64) -> Vec<f64> {
        let a: Vec<f64> = normal_rows(d, d, seed)
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let mut m = matmul(&a, &transpose(&a, d), d);
        (0..d).for_each(|i| m[i * d + i] += 0.1);
        m
    }

    fn transpose(m: &[f64], d: usize) -> Vec<f64> {
        (0..d * d).map(|k| m[(k % d) * d + k / d]).collect()
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn jacobi_reconstructs_and_is_orthonormal() {
        let d = 24;
        let m = random_spd(d, 1);
        let (values, v) = symmetric_eigen(&m, d);
        let mut scaled = v.clone();
        for i in 0..d {
            for k in 0..d {
                scaled[i * d + k] *= values[k];
            }
        }
        assert!(max_diff(&matmul(&scaled, &transpose(&v, d), d), &m) < 1e-9);
        let eye: Vec<f64> = (0..d * d)
            .map(|k| f64::from(u8::from(k % (d + 1) == 0)))
            .collect();
        assert!(max_diff(&matmul(&transpose(&v, d), &v, d), &eye) < 1e-12);
        let root = sqrt_psd(&m, d);
        assert!(max_diff(&matmul(&root, &root, d), &m) < 1e-9);
    }

    #[test]
    fn identical_feature_sets_are_at_distance_zero() {
        // 64 features from 40 rows: a rank-deficient covariance, as with a small n.
        for (n, dim) in [(500, 16), (40, 64)] {
            let rows = normal_rows(n, dim, 2);
            let s = GaussianStats::from_rows(&rows, dim).unwrap();
            let fd = frechet_distance(&s, &s).unwrap();
            let trace: f64 = (0..dim).map(|i| s.cov[i * dim + i]).sum();
            assert!(fd < 1e-6 * trace, "n {n}, dim {dim}: {fd}");
        }
    }

    #[test]
    fn shifted_sample_sets_give_the_squared_shift() {
        let dim = 32;
        let rows = normal_rows(300, dim, 3);
        let shift: Vec<f32> = (0..dim).map(|i| 0.1 * i as f32 - 1.0).collect();
        let moved: Vec<f32> = rows
            .iter()
            .enumerate()
            .map(|(k, &x)| x + shift[k % dim])
            .collect();
        let a = GaussianStats::from_rows(&rows, dim).unwrap();
        let b = GaussianStats::from_rows(&moved, dim).unwrap();
        let expected: f64 = shift.iter().map(|&s| f64::from(s * s)).sum();
        let fd = frechet_distance(&a, &b).unwrap();
        assert!(
            (fd - expected).abs() < 1e-4 * expected,
            "{fd} vs {expected}"
        );
    }

    #[test]
    fn commuting_covariances_match_the_closed_form() {
        // C_k = R D_k Rᵀ with one rotation R: d² = |Δμ|² + Σ (√d1 − √d2)².
        let d = 8;
        let (_, r) = symmetric_eigen(&random_spd(d, 4), d);
        let d1: Vec<f64> = (0..d).map(|i| 0.5 + i as f64).collect();
        let d2: Vec<f64> = (0..d).map(|i| 4.0 / (1.0 + i as f64)).collect();
        let with_diag = |diag: &[f64]| {
            let mut scaled = r.clone();
            (0..d * d).for_each(|k| scaled[k] *= diag[k % d]);
            let mut c = matmul(&scaled, &transpose(&r, d), d);
            for i in 0..d {
                for j in 0..i {
                    let s = 0.5 * (c[i * d + j] + c[j * d + i]);
                    c[i * d + j] = s;
                    c[j * d + i] = s;
                }
            }
            c
        };
        let a = GaussianStats::new(vec![0.0; d], with_diag(&d1)).unwrap();
        let b = GaussianStats::new(vec![1.0; d], with_diag(&d2)).unwrap();
        let expected: f64 = d as f64
            + d1.iter()
                .zip(&d2)
                .map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2))
                .sum::<f64>();
        let fd = frechet_distance(&a, &b).unwrap();
        assert!(
            (fd - expected).abs() < 1e-9 * expected,
            "{fd} vs {expected}"
        );
    }

    #[test]
    fn non_commuting_2x2_matches_the_closed_form() {
        // For 2x2, tr √M = √(tr M + 2 √det M) with tr M = tr(C1 C2), det M = det C1 det C2.
        let c1 = [2.0, 0.6, 0.6, 1.0];
        let c2 = [0.5, -0.3, -0.3, 3.0];
        let a = GaussianStats::new(vec![0.0, 1.0], c1.to_vec()).unwrap();
        let b = GaussianStats::new(vec![0.5, -1.0], c2.to_vec()).unwrap();
        let tr_prod = c1[0] * c2[0] + c1[1] * c2[2] + c1[2] * c2[1] + c1[3] * c2[3];
        let det = |c: &[f64; 4]| c[0] * c[3] - c[1] * c[2];
        let tr_root = (tr_prod + 2.0 * (det(&c1) * det(&c2)).sqrt()).sqrt();
        let expected = 0.25 + 4.0 + 3.0 + 3.5 - 2.0 * tr_root;
        let fd = frechet_distance(&a, &b).unwrap();
        assert!((fd - expected).abs() < 1e-12, "{fd} vs {expected}");
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(GaussianStats::from_rows(&[1.0, 2.0, 3.0], 3).is_err());
        assert!(GaussianStats::from_rows(&[1.0; 7], 3).is_err());
        assert!(GaussianStats::new(vec![0.0; 2], vec![1.0, 0.5, 0.0, 1.0]).is_err());
        let a = GaussianStats::new(vec![0.0], vec![1.0]).unwrap();
        let b = GaussianStats::new(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        assert!(frechet_distance(&a, &b).is_err());
    }
}

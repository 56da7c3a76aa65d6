//! Finite-difference gradient checking.
//!
//! The function under test maps some input tensors to one output tensor. It is reduced to the
//! scalar `L = sum(f(inputs) * R)` with a fixed random projection `R` (so that every output
//! element matters with a different weight), then the analytic gradient of `L` from candle's
//! backprop is compared with central differences `(L(x+h) - L(x-h)) / 2h`, element by element.
//! Use f64 inputs with `h` around 1e-6 for tight tolerances; keep the inputs tiny (each element
//! costs two evaluations).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ddpm_nn::gradcheck::GradCheck;
//! let x = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.5]], &Device::Cpu).unwrap();
//! GradCheck::default().assert(|v| v[0].sqr(), &[x]);
//! ```

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Settings of a gradient check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Finite-difference step.
    pub step: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numeric gradient).
    pub rtol: f64,
    /// Seed of the output projection `R`.
    pub seed: u64,
}

impl Default for GradCheck {
    /// Settings for f64 inputs: step 1e-6, atol 1e-6, rtol 1e-5.
    fn default() -> Self {
        GradCheck {
            step: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            seed: 0,
        }
    }
}

/// The outcome for one input tensor.
#[derive(Debug, Clone)]
pub struct InputReport {
    /// Position of the input in the slice passed to the check.
    pub input: usize,
    /// Largest `|analytic - numeric|` over the elements.
    pub max_abs_err: f64,
    /// Flat index of the element with the largest excess over the tolerance (or error).
    pub worst_element: usize,
    /// Analytic gradient at that element.
    pub analytic: f64,
    /// Numeric gradient at that element.
    pub numeric: f64,
    /// Whether every element is within `atol + rtol * |numeric|`.
    pub passed: bool,
}

/// Draws the projection `R` with the shape and dtype of `like`.
fn projection(like: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f64> = (0..like.elem_count())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_vec(values, like.shape(), &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// `sum(f(inputs) * R)` as f64.
fn projected_loss<F>(f: &F, inputs: &[Tensor], seed: u64) -> Result<(Tensor, f64)>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let out = f(inputs)?;
    let loss = out.mul(&projection(&out, seed)?)?.sum_all()?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((loss, value))
}

/// Analytic gradients of `sum(f(inputs) * R)` w.r.t. each input (zeros where no gradient flows).
pub fn analytic_grads<F>(f: F, inputs: &[Tensor], seed: u64) -> Result<Vec<Tensor>>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (loss, _) = projected_loss(&f, &tensors, seed)?;
    let grads = loss.backward()?;
    tensors
        .iter()
        .map(|t| match grads.get(t) {
            Some(g) => Ok(g.clone()),
            None => t.zeros_like(),
        })
        .collect()
}

/// Central-difference gradients of `sum(f(inputs) * R)` w.r.t. each input.
pub fn numeric_grads<F>(f: F, inputs: &[Tensor], seed: u64, step: f64) -> Result<Vec<Tensor>>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let mut out = Vec::with_capacity(inputs.len());
    for i in 0..inputs.len() {
        let x = &inputs[i];
        let base = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let mut grad = vec![0f64; base.len()];
        let mut perturbed = inputs.to_vec();
        for (j, g) in grad.iter_mut().enumerate() {
            let mut eval = |delta: f64| -> Result<f64> {
                let mut values = base.clone();
                values[j] += delta;
                perturbed[i] = Tensor::from_vec(values, x.shape(), &Device::Cpu)?
                    .to_dtype(x.dtype())?
                    .to_device(x.device())?;
                Ok(projected_loss(&f, &perturbed, seed)?.1)
            };
            *g = (eval(step)? - eval(-step)?) / (2.0 * step);
        }
        out.push(Tensor::from_vec(grad, x.shape(), &Device::Cpu)?);
    }
    Ok(out)
}

impl GradCheck {
    /// Compares analytic and numeric gradients for every input.
    pub fn run<F>(&self, f: F, inputs: &[Tensor]) -> Result<Vec<InputReport>>
    where
        F: Fn(&[Tensor]) -> Result<Tensor>,
    {
        let analytic = analytic_grads(&f, inputs, self.seed)?;
        let numeric = numeric_grads(&f, inputs, self.seed, self.step)?;
        let mut reports = Vec::with_capacity(inputs.len());
        for (input, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
            let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            let n = n.flatten_all()?.to_vec1::<f64>()?;
            let mut report = InputReport {
                input,
                max_abs_err: 0.0,
                worst_element: 0,
                analytic: a.first().copied().unwrap_or(0.0),
                numeric: n.first().copied().unwrap_or(0.0),
                passed: true,
            };
            let mut worst_excess = f64::NEG_INFINITY;
            for (j, (&av, &nv)) in a.iter().zip(&n).enumerate() {
                let err = (av - nv).abs();
                let excess = err - (self.atol + self.rtol * nv.abs());
                report.max_abs_err = report.max_abs_err.max(err);
                if excess > worst_excess || !err.is_finite() {
                    worst_excess = excess;
                    report.worst_element = j;
                    report.analytic = av;
                    report.numeric = nv;
                }
                if excess.is_nan() || excess > 0.0 {
                    report.passed = false;
                }
            }
            reports.push(report);
        }
        Ok(reports)
    }

    /// Runs the check and panics with the failing inputs' reports (for tests).
    pub fn assert<F>(&self, f: F, inputs: &[Tensor])
    where
        F: Fn(&[Tensor]) -> Result<Tensor>,
    {
        let reports = self.run(f, inputs).expect("gradient check could not run");
        let failed: Vec<_> = reports.iter().filter(|r| !r.passed).collect();
        assert!(
            failed.is_empty(),
            "gradient check failed ({self:?}): {failed:#?}"
        );
    }
}

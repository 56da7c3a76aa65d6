//! Reproducible, seeded parameter initialisation.
//!
//! candle's `Init::Uniform` draws from an unseeded RNG on the CPU, so a model built through a
//! plain `VarBuilder::from_varmap` differs from run to run. [`SeededInit`] is a `VarBuilder`
//! backend over a caller's [`VarMap`]: every variable a module requests is drawn from a
//! ChaCha8 stream keyed by `(seed, full variable name)`, inserted into the `VarMap` under that
//! name, and its [`InitSpec`] is recorded. The values therefore depend only on the seed and the
//! name — not on construction order, thread scheduling or the device. [`reinit_seeded`] redraws
//! recorded specs later (e.g. to restart a run with another seed).

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::NnError;

/// The distribution a variable is drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitSpec {
    /// Every element equal to this value (norm weights 1, biases 0).
    Const(f64),
    /// Uniform on `[lo, hi)` (PyTorch's kaiming-uniform default for conv/linear is
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`).
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
}

impl InitSpec {
    /// PyTorch's default for conv / linear weights and biases: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    pub fn torch_default(fan_in: usize) -> Self {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        InitSpec::Uniform {
            lo: -bound,
            hi: bound,
        }
    }

    /// The equivalent candle hint, for modules requesting variables through a `VarBuilder`.
    pub fn to_init(self) -> Init {
        match self {
            InitSpec::Const(c) => Init::Const(c),
            InitSpec::Uniform { lo, hi } => Init::Uniform { lo, up: hi },
            InitSpec::Normal { mean, std } => Init::Randn { mean, stdev: std },
        }
    }

    /// Converts a candle hint; `Init::Kaiming` is rejected (use [`InitSpec::torch_default`]).
    pub fn from_init(name: &str, init: Init) -> std::result::Result<Self, NnError> {
        match init {
            Init::Const(c) => Ok(InitSpec::Const(c)),
            Init::Uniform { lo, up } => Ok(InitSpec::Uniform { lo, hi: up }),
            Init::Randn { mean, stdev } => Ok(InitSpec::Normal { mean, std: stdev }),
            other => Err(NnError::UnsupportedInit {
                name: name.to_string(),
                init: format!("{other:?}"),
            }),
        }
    }

    /// Draws a tensor of `shape` from the stream keyed by `(seed, name)`.
    pub fn draw(
        self,
        shape: &Shape,
        seed: u64,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let n = shape.elem_count();
        let values: Vec<f64> = match self {
            InitSpec::Const(c) => vec![c; n],
            InitSpec::Uniform { lo, hi } => {
                let mut rng = stream(seed, name);
                (0..n)
                    .map(|_| lo + (hi - lo) * rng.random::<f64>())
                    .collect()
            }
            InitSpec::Normal { mean, std } => {
                let mut rng = stream(seed, name);
                (0..n)
                    .map(|_| mean + std * rng.sample::<f64, _>(StandardNormal))
                    .collect()
            }
        };
        Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

/// FNV-1a hash of a variable name: selects the ChaCha stream, so draws are order-independent.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The RNG of one variable.
fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(name_hash(name));
    rng
}

/// A `VarBuilder` factory whose variables are drawn from a seed (see the module docs).
///
/// ```
/// # use candle_core::{DType, Device};
/// # use candle_nn::VarMap;
/// let varmap = VarMap::new();
/// let init = ddpm_nn::SeededInit::new(&varmap, 42);
/// let vb = init.var_builder(DType::F32, &Device::Cpu);
/// let conv = ddpm_nn::Conv2d::new(vb.pp("conv"), 1, 4, 3, 1, 1).unwrap();
/// assert_eq!(init.specs().len(), 2); // conv.weight, conv.bias
/// ```
#[derive(Clone)]
pub struct SeededInit {
    varmap: VarMap,
    seed: u64,
    specs: Arc<Mutex<Vec<(String, InitSpec)>>>,
}

impl SeededInit {
    /// A factory inserting into `varmap` (a handle: the caller's map is shared, not copied).
    pub fn new(varmap: &VarMap, seed: u64) -> Self {
        SeededInit {
            varmap: varmap.clone(),
            seed,
            specs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The seed the variables are drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A root `VarBuilder` (empty prefix) over this factory.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// The recorded `(name, spec)` of every variable created so far, sorted by name.
    pub fn specs(&self) -> Vec<(String, InitSpec)> {
        let mut specs = self.specs.lock().expect("init spec lock poisoned").clone();
        specs.sort_by(|a, b| a.0.cmp(&b.0));
        specs
    }
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!(
                    "variable `{name}` requested with shape {s:?} but exists with {:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let spec = InitSpec::from_init(name, h)?;
        let var = Var::from_tensor(&spec.draw(&s, self.seed, name, dtype, dev)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        self.specs
            .lock()
            .expect("init spec lock poisoned")
            .push((name.to_string(), spec));
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        match data.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => Err(NnError::MissingVar {
                name: name.to_string(),
            }
            .into()),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("varmap lock poisoned")
            .contains_key(name)
    }
}

/// Redraws every `(name, spec)` of `specs` in `varmap` from the stream keyed by `(seed, name)`
/// (same values as a fresh [`SeededInit`] with that seed would give). Errors name the first
/// variable that is missing from the map.
pub fn reinit_seeded(varmap: &VarMap, specs: &[(String, InitSpec)], seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    for (name, spec) in specs {
        let var = data
            .get(name)
            .ok_or_else(|| NnError::MissingVar { name: name.clone() })?;
        let value = spec.draw(var.shape(), seed, name, var.dtype(), var.device())?;
        var.set(&value)?;
    }
    Ok(())
}

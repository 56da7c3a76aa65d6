//! [`Model`]: a network, its variables, buffers and state-dict I/O.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use ddpm_diffusion::Denoiser;
use ddpm_nn::{BatchNorm2d, SeededInit};

use crate::config::ModelConfig;
use crate::error::{Result, UnetError};
use crate::layers::Tracer;
use crate::modern::ModernUNet;
use crate::reference::RefUNet;
use crate::residual::ResUNet;
use crate::time::{PE_TABLE_NAME, PeTable};

/// Largest difference tolerated between a loaded `pe.embedding.weight` and the table this
/// crate builds (they agree to about one f32 ulp of arguments up to T; a wrong layout or
/// width differs by O(1)).
const PE_TABLE_TOLERANCE: f64 = 1e-3;

/// The network behind a [`Model`].
#[derive(Debug)]
enum Network {
    Reference(RefUNet),
    Residual(ResUNet),
    Modern(ModernUNet),
}

/// A denoising network ε̂(x_t, t) with its trainable variables (a [`VarMap`]) and its
/// non-trainable state (BatchNorm running statistics, the frozen time-encoding table).
///
/// Variable names are the PyTorch `state_dict` names, so a safetensors file written by
/// `safetensors.torch.save_file(net.state_dict(), path)` loads with [`Model::load`].
pub struct Model {
    config: ModelConfig,
    varmap: VarMap,
    net: Network,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("trainable_count", &self.trainable_count())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Builds the network of `config` on `device`, every variable drawn from `seed` with
    /// PyTorch's default initialisation (the same seed gives the same weights).
    pub fn new(config: &ModelConfig, device: &Device, seed: u64) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let vb = SeededInit::new(&varmap, seed).var_builder(DType::F32, device);
        let net = match config {
            ModelConfig::Reference(c) => Network::Reference(RefUNet::new(vb, c)?),
            ModelConfig::Residual(c) => Network::Residual(ResUNet::new(vb, c)?),
            ModelConfig::Modern(c) => Network::Modern(ModernUNet::new(vb, c)?),
        };
        Ok(Model {
            config: config.clone(),
            varmap,
            net,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the variables live on.
    pub fn device(&self) -> Device {
        match self.trainable().first() {
            Some((_, var)) => var.device().clone(),
            None => Device::Cpu,
        }
    }

    /// ε̂(x, t) for `x` (B,C,H,W) and integer `t` of shape (B) or (B,1). `train` selects
    /// BatchNorm batch statistics (updating the running statistics) and dropout. A
    /// class-conditional network gives its unconditional ("no class") output.
    pub fn forward(&self, x: &Tensor, t: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, t, None, train, &mut |_, _| {})
    }

    /// The number of classes the network is conditioned on (0: unconditional).
    pub fn num_classes(&self) -> usize {
        self.config.num_classes()
    }

    /// ε̂(x, t, class) of a class-conditional network: `classes` (u32, shape (B)) holds each
    /// sample's label, below [`Model::num_classes`], or `num_classes` itself for the
    /// unconditional ("no class") output. An error for an unconditional network or a label
    /// out of range.
    pub fn forward_classes(
        &self,
        x: &Tensor,
        t: &Tensor,
        classes: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let n = self.num_classes();
        if n == 0 {
            candle_core::bail!("this network is not class-conditional: it takes no labels");
        }
        let labels = classes.to_dtype(DType::U32)?;
        if labels.dims() != [x.dim(0)?] {
            candle_core::bail!(
                "one class label per sample expected, got shape {:?} for a batch of {}",
                labels.dims(),
                x.dim(0)?
            );
        }
        if let Some(bad) = labels
            .to_vec1::<u32>()?
            .into_iter()
            .find(|&l| l as usize > n)
        {
            candle_core::bail!(
                "class label {bad} is out of range: the network knows {n} classes (0..{}), and \
                 {n} means no class",
                n - 1
            );
        }
        self.run(x, t, Some(&labels), train, &mut |_, _| {})
    }

    /// [`Model::forward`], also handing named intermediate tensors to `trace`. The reference
    /// UNet reports the PyTorch fixture's trace names (`pe`, `pe_en{i}`, `enc{i}`,
    /// `pe_bottom`, `bottom`, `pe_de{i}`, `dec{i}`); the residual UNet `pe`, `enc{i}`, `mid`,
    /// `dec{j}`; the modern UNet `temb`, `down{l}`, `mid`, `up{l}`.
    pub fn forward_traced(
        &self,
        x: &Tensor,
        t: &Tensor,
        train: bool,
        trace: Tracer,
    ) -> candle_core::Result<Tensor> {
        self.run(x, t, None, train, trace)
    }

    fn run(
        &self,
        x: &Tensor,
        t: &Tensor,
        classes: Option<&Tensor>,
        train: bool,
        trace: Tracer,
    ) -> candle_core::Result<Tensor> {
        let image = self.config.image();
        match x.dims() {
            [_, c, h, w] if [*c, *h, *w] == image.dims() => {}
            dims => candle_core::bail!("x must have shape (B, {image}) as CxHxW, got {dims:?}"),
        }
        match &self.net {
            Network::Reference(net) => net.forward(x, t, train, trace),
            Network::Residual(net) => net.forward(x, t, classes, trace),
            Network::Modern(net) => net.forward(x, t, classes, train, trace),
        }
    }

    /// The trainable variables, sorted by name: what an optimizer updates.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// The number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn pe(&self) -> Option<&PeTable> {
        match &self.net {
            Network::Reference(net) => Some(net.pe()),
            Network::Residual(net) => Some(net.pe()),
            Network::Modern(_) => None,
        }
    }

    fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        match &self.net {
            Network::Reference(net) => net.batch_norms(),
            Network::Residual(_) | Network::Modern(_) => Vec::new(),
        }
    }

    /// Non-trainable tensors: BatchNorm buffers and the frozen time-encoding table.
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for bn in self.batch_norms() {
            out.extend(bn.buffers()?);
        }
        if let Some(pe) = self.pe() {
            out.push((PE_TABLE_NAME.to_string(), pe.tensor()));
        }
        Ok(out)
    }

    /// A snapshot (copies, unaffected by later training) of every tensor under its PyTorch
    /// name: trainable variables, BatchNorm buffers (`running_mean`, `running_var`,
    /// `num_batches_tracked`) and `pe.embedding.weight`.
    pub fn state_dict(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, var) in self.trainable() {
            out.insert(name, var.as_detached_tensor().copy()?);
        }
        for (name, tensor) in self.buffers()? {
            out.insert(name, tensor.copy()?);
        }
        Ok(out)
    }

    /// Loads a state dict (PyTorch names). Nothing is changed unless every tensor checks out;
    /// the error names the first (by name) missing, unexpected or mis-shaped tensor.
    /// `pe.embedding.weight` and `*.num_batches_tracked` may be absent; a present table must
    /// match the one this crate builds (within 1e-3) and then replaces it, as in PyTorch.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let expected = self.state_dict()?;
        let optional = |name: &str| name == PE_TABLE_NAME || name.ends_with(".num_batches_tracked");
        for (name, want) in &expected {
            match tensors.get(name) {
                None if optional(name) => {}
                None => {
                    return Err(UnetError::Missing {
                        name: name.clone(),
                        expected: want.dims().to_vec(),
                    });
                }
                Some(found) if found.dims() != want.dims() => {
                    return Err(UnetError::ShapeMismatch {
                        name: name.clone(),
                        expected: want.dims().to_vec(),
                        found: found.dims().to_vec(),
                    });
                }
                Some(_) => {}
            }
        }
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        if let Some(name) = names.into_iter().find(|n| !expected.contains_key(*n)) {
            return Err(UnetError::Unexpected {
                name: name.clone(),
                shape: tensors[name].dims().to_vec(),
            });
        }
        if let (Some(pe), Some(loaded)) = (self.pe(), tensors.get(PE_TABLE_NAME)) {
            let diff = max_abs_diff(&pe.tensor(), loaded)?;
            if diff > PE_TABLE_TOLERANCE {
                return Err(UnetError::FrozenMismatch {
                    name: PE_TABLE_NAME.to_string(),
                    max_abs_diff: diff,
                });
            }
            pe.set(loaded)?;
        }
        for (name, var) in self.trainable() {
            let t = &tensors[&name];
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        for bn in self.batch_norms() {
            bn.load_buffers(|name| tensors.get(name).cloned())?;
        }
        Ok(())
    }

    /// Writes [`Model::state_dict`] to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self.state_dict()?.into_iter().collect();
        candle_core::safetensors::save(&tensors, path).map_err(|source| UnetError::File {
            action: "cannot write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Loads a safetensors state dict (see [`Model::load_state_dict`]).
    pub fn load(&self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device()).map_err(|source| {
            UnetError::File {
                action: "cannot read",
                path: path.to_path_buf(),
                source,
            }
        })?;
        self.load_state_dict(&tensors)
    }
}

impl Model {
    /// The time input the network reads: the reference and residual UNets look their time
    /// encoding up in a table of integer timesteps, so a sampler asking for a time between
    /// two (Euler, Heun) gets the nearest one; the modern UNet computes its embedding at any
    /// time.
    fn time_input(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        match &self.net {
            Network::Modern(_) => Ok(t.clone()),
            Network::Reference(_) | Network::Residual(_) => t.to_dtype(DType::F32)?.round(),
        }
    }
}

impl Denoiser for Model {
    /// The network in eval mode (see [`Model::time_input`] for times between timesteps); a
    /// class-conditional network gives its unconditional output.
    fn predict(&self, x_t: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(x_t, &self.time_input(t)?, false)
    }

    fn num_classes(&self) -> usize {
        Model::num_classes(self)
    }

    fn predict_classes(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        classes: &Tensor,
    ) -> candle_core::Result<Tensor> {
        self.forward_classes(x_t, &self.time_input(t)?, classes, false)
    }
}

/// Largest absolute elementwise difference of two same-shaped tensors.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let b = b.to_dtype(DType::F32)?.to_device(a.device())?;
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

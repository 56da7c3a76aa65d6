//! Neural-network building blocks with correct gradients for the DDPM networks, on candle.
//!
//! # Functions
//! All take `x` as (B,C,H,W) and return `candle_core::Result<Tensor>`, differentiable w.r.t.
//! every tensor argument: [`conv2d`], [`conv_transpose2d`] (PyTorch weight layout and
//! `output_padding`), [`max_pool2d`] (floor mode, gradient to the first maximum of each window),
//! [`layer_norm_chw`] (LayerNorm over (C,H,W)), [`group_norm`] and [`group_norm_fused`]
//! (GroupNorm of `x` plus a per-sample channel shift, then SiLU, in one pass), [`leaky_relu`],
//! [`relu`],
//! [`silu`], [`upsample_nearest2d`] (integer factor).
//! Also [`matmul()`] (batched products with transposed operands, no copies) and
//! [`scaled_softmax`] (`softmax(scale * x)` over the last dim), the pieces of attention.
//! The CPU-kernel functions have a `*_portable` twin written with candle's ops (any device) that
//! they fall back to off the CPU and that the tests compare them with.
//!
//! # Modules
//! Built from a `candle_nn::VarBuilder`, with PyTorch parameter names (`weight`, `bias`) and
//! PyTorch's default initialisation: [`Conv2d`], [`ConvTranspose2d`], [`Linear`]
//! (`U(±1/sqrt(fan_in))` for weight and bias; fan_in of a transposed conv is
//! `weight.size(1)*k*k`), [`LayerNormChw`], [`GroupNorm`], [`BatchNorm2d`] (ones/zeros).
//! [`BatchNorm2d`] keeps `running_mean`, `running_var`, `num_batches_tracked` outside the
//! VarMap (non-trainable) and exposes them with full names via `buffers()` / `load_buffers()`.
//!
//! # Seeded initialisation (how a whole model's init depends only on a seed)
//! Build the model through [`SeededInit::var_builder`] instead of `VarBuilder::from_varmap`:
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::VarMap;
//! let varmap = VarMap::new();
//! let init = ddpm_nn::SeededInit::new(&varmap, 7);
//! let vb = init.var_builder(DType::F32, &Device::Cpu);
//! let conv = ddpm_nn::Conv2d::new(vb.pp("encoder.0").pp("conv"), 1, 8, 3, 1, 1).unwrap();
//! // varmap now holds "encoder.0.conv.weight" and "encoder.0.conv.bias", drawn from seed 7.
//! let y = conv.forward(&Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap()).unwrap();
//! assert_eq!(y.dims(), &[2, 8, 28, 28]);
//! // Later: redraw the same variables from another seed.
//! ddpm_nn::reinit_seeded(&varmap, &init.specs(), 8).unwrap();
//! ```
//!
//! Every variable is drawn from its own ChaCha8 stream keyed by `(seed, full name)`, so values
//! depend only on the seed and the name (not on construction order); the requested
//! `candle_nn::Init` (`Const`, `Uniform`, `Randn`; not `Kaiming`) is recorded as an
//! [`InitSpec`]. Your own variables (e.g. a zero-initialised output conv) just use
//! `vb.get_with_hints(shape, name, InitSpec::Const(0.0).to_init())`. Tensors that must not
//! be trained (a frozen table) should not be requested from the VarBuilder.
//!
//! # Gradient checking
//! [`gradcheck`] compares candle's backprop with central finite differences.
//!
//! # CPU tuning
//! [`configure_cpu_threads`] (call it first thing in `main`) keeps candle's matmul pool to one
//! thread ([`set_candle_threads`]) so that it does not compete with the kernels' rayon pool, and
//! tunes glibc's allocator ([`tune_allocator`]).
//!
//! # Layout
//! Three tiers of modules, each using only the tiers below it:
//! - **layers** (the files at the top: `conv`, `linear`, `norm`, `pool`, `act`, `upsample`,
//!   `softmax`, `matmul`, plus `init`, `gradcheck`, `error`): the public functions and modules,
//!   their argument checks, and the `*_portable` twins written with candle ops. A function with
//!   a CPU kernel calls its custom op when `ops::fast_cpu` says the kernels apply.
//! - **`ops/`**: the candle `CustomOp1/2/3` impls that wire the kernels into autograd, one file
//!   per op family; every one reaches its kernel through `ops::dispatch::float_kernel!`, the one
//!   f32/f64 dispatch (contiguity and dtype checks, errors naming the op).
//! - **`cpu/`**: the kernels themselves on plain slices (generic over `cpu::real::Real`, f32 or
//!   f64, parallel with rayon), the shared `gemm` and reductions, and the thread and allocator
//!   tuning.
//!
//! A new layer goes in its own top-level file, re-exported here; a new kernel goes in
//! `cpu/<family>.rs`, its op (forward and backward) in `ops/<family>.rs`, and the layer calls
//! the op when `fast_cpu` holds and its portable twin otherwise (the tests compare the two).

mod act;
mod conv;
mod cpu;
mod error;
pub mod gradcheck;
mod init;
mod linear;
mod matmul;
mod norm;
mod ops;
mod pool;
mod softmax;
mod upsample;

pub use act::{leaky_relu, leaky_relu_portable, relu, silu};
pub use conv::{
    Conv2d, ConvTranspose2d, conv_transpose2d, conv_transpose2d_portable, conv2d, conv2d_portable,
};
pub use cpu::tuning::{configure_cpu_threads, set_candle_threads, tune_allocator};
pub use error::NnError;
pub use init::{InitSpec, SeededInit, reinit_seeded};
pub use linear::Linear;
pub use matmul::{matmul, matmul_portable};
pub use norm::{
    BATCH_NORM_EPS, BATCH_NORM_MOMENTUM, BatchNorm2d, GroupNorm, LayerNormChw, NormAct, group_norm,
    group_norm_fused, group_norm_fused_portable, group_norm_portable, layer_norm_chw,
    layer_norm_chw_portable,
};
pub use pool::{max_pool2d, max_pool2d_portable};
pub use softmax::{scaled_softmax, scaled_softmax_portable};
pub use upsample::{upsample_nearest2d, upsample_nearest2d_portable};

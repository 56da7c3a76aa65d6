//! candle `CustomOp1/2/3` impls that wire the CPU kernels of [`crate::cpu`] into autograd, one
//! file per op family; each op's backward is again such an op, so every pass runs the kernels.
//!
//! [`dispatch`] holds what all of them share: [`fast_cpu`] (whether the kernels apply) and the
//! one f32/f64 dispatch, [`dispatch::float_kernel!`].

pub(crate) mod act;
pub(crate) mod conv;
pub(crate) mod dispatch;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod softmax;
pub(crate) mod upsample;

pub(crate) use dispatch::fast_cpu;

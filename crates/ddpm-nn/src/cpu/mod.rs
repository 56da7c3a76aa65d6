//! CPU kernels (f32/f64, on plain slices, parallel with rayon) behind the custom ops of
//! [`crate::ops`], with their shared numeric pieces and the process-wide thread and allocator
//! tuning they want.
//!
//! - shared: [`real`] (the element trait), [`gemm`] (the one GEMM), [`reduce`] (vectorising
//!   sums), [`tuning`] (threads, allocator);
//! - one file per op family: [`conv`] (im2col + GEMM), [`matmul`], [`layer_norm`],
//!   [`group_norm`], [`pool`], [`act`], [`softmax`], [`upsample`].

pub(crate) mod act;
pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod group_norm;
pub(crate) mod layer_norm;
pub(crate) mod matmul;
pub(crate) mod pool;
pub(crate) mod real;
pub(crate) mod reduce;
pub(crate) mod softmax;
pub(crate) mod tuning;
pub(crate) mod upsample;

//! The browser demo's engine: the toolkit's own network and samplers, compiled to
//! WebAssembly, drawing digits step by step in a web page (`web/`, built by `cargo xtask web`).
//!
//! - [`Demo`]: a checkpoint read from bytes (`manifest.json` and a safetensors file, f32 or
//!   f16), a grid drawn for a [`GridRequest`] with every step handed to a callback (whole,
//!   or one band of its rows, a [`GridPart`], so that several Web Workers draw one grid in
//!   parallel), the schedule ([`ScheduleRow`]) and the forward process on a real digit
//!   ([`Demo::noised_digit`]).
//! - [`grid_picture`]: samples tiled into RGBA pixels exactly as the sampler writes its PNGs.
//!
//! Everything here is plain Rust that runs natively too: the browser test draws the same grid
//! natively with [`Demo`] and compares. On `wasm32` the `bindings` module exports it to
//! JavaScript through wasm-bindgen (the page's Web Worker calls it).

#[cfg(target_arch = "wasm32")]
mod bindings;
mod demo;
mod error;

pub use demo::{
    Demo, GRID_SIDE, GridPart, GridRequest, ModelInfo, Noised, Picture, ScheduleRow, grid_picture,
};
pub use error::{Result, WebError};

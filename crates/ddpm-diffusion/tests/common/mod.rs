//! Helpers shared by the integration tests.

use candle_core::{Device, Shape, Tensor};
use ddpm_diffusion::NoiseSource;

/// Hands out the same recorded draw every time: single steps checked with a given z.
pub struct Fixed(pub Tensor);

impl NoiseSource for Fixed {
    fn randn(&mut self, shape: &Shape, _: &Device) -> ddpm_diffusion::Result<Tensor> {
        assert_eq!(self.0.shape(), shape);
        Ok(self.0.clone())
    }
}

use candle_core::{Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::error::invalid;

/// Something that hands out standard-normal tensors: a seeded [`NoiseRng`] in normal use, or a
/// fixed sequence of recorded draws when checking against another implementation.
pub trait NoiseSource {
    /// Returns a tensor of i.i.d. N(0, 1) values of the given shape on `device`.
    fn randn(&mut self, shape: &Shape, device: &Device) -> Result<Tensor>;
}

/// A seeded, serialisable Gaussian noise generator (ChaCha8), identical on every platform.
///
/// Values are drawn on the host and copied to the device, so a seed gives the same numbers on
/// CPU and CUDA, and [`NoiseRng::state`] / [`NoiseRng::from_state`] resume a stream exactly.
#[derive(Debug, Clone)]
pub struct NoiseRng {
    seed: u64,
    rng: ChaCha8Rng,
}

/// The position of a [`NoiseRng`] in its stream, for checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseRngState {
    /// The seed the stream started from.
    pub seed: u64,
    /// How many 32-bit words of the stream have been used.
    pub word_pos: u128,
}

impl NoiseRng {
    /// A generator starting at the beginning of the stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Where the generator is now.
    pub fn state(&self) -> NoiseRngState {
        NoiseRngState {
            seed: self.seed,
            word_pos: self.rng.get_word_pos(),
        }
    }

    /// A generator positioned exactly where `state` was taken.
    pub fn from_state(state: NoiseRngState) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(state.seed);
        rng.set_word_pos(state.word_pos);
        Self {
            seed: state.seed,
            rng,
        }
    }

    /// Draws `n` standard-normal f32 values.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.rng.sample(StandardNormal)).collect()
    }

    /// Draws `n` integers uniformly from `0..upper`.
    pub fn uniform_indices(&mut self, n: usize, upper: u32) -> Vec<u32> {
        (0..n).map(|_| self.rng.random_range(0..upper)).collect()
    }
}

impl NoiseSource for NoiseRng {
    fn randn(&mut self, shape: &Shape, device: &Device) -> Result<Tensor> {
        let values = self.normal_vec(shape.elem_count());
        Ok(Tensor::from_vec(values, shape, device)?)
    }
}

/// The rows `start..start + len` of every draw that `inner` would make for a whole batch of
/// `batch` images: sampling a part of a batch (one Web Worker's share of a grid, say) gets
/// exactly the noise those images get when the whole batch is sampled at once.
///
/// Each draw of shape (len, ...) draws (batch, ...) from `inner` and keeps the part's rows.
pub struct BatchRows<'a, N> {
    inner: &'a mut N,
    batch: usize,
    start: usize,
}

impl<'a, N: NoiseSource> BatchRows<'a, N> {
    /// The part of a `batch`-image batch that starts at image `start`.
    pub fn new(inner: &'a mut N, batch: usize, start: usize) -> Result<Self> {
        if start >= batch {
            return invalid(
                "start",
                format!("the part starts at image {start} of a batch of {batch}"),
            );
        }
        Ok(Self {
            inner,
            batch,
            start,
        })
    }
}

impl<N: NoiseSource> NoiseSource for BatchRows<'_, N> {
    fn randn(&mut self, shape: &Shape, device: &Device) -> Result<Tensor> {
        let (len, rest) = match shape.dims().split_first() {
            Some((&len, rest)) if self.start + len <= self.batch => (len, rest),
            _ => {
                return invalid(
                    "shape",
                    format!(
                        "a draw of shape {:?} does not fit images {}.. of a batch of {}",
                        shape.dims(),
                        self.start,
                        self.batch
                    ),
                );
            }
        };
        let whole: Shape = [&[self.batch], rest].concat().into();
        Ok(self
            .inner
            .randn(&whole, device)?
            .narrow(0, self.start, len)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_resumes_the_stream() {
        let mut a = NoiseRng::new(7);
        a.normal_vec(13);
        let mut b = NoiseRng::from_state(a.state());
        assert_eq!(a.normal_vec(50), b.normal_vec(50));
    }

    #[test]
    fn same_seed_same_numbers_and_roughly_standard_normal() {
        let x = NoiseRng::new(3).normal_vec(20_000);
        assert_eq!(x, NoiseRng::new(3).normal_vec(20_000));
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / x.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
    #[test]
    fn batch_rows_hand_out_the_whole_batchs_draws_of_their_rows() {
        let shape: Shape = (6, 2, 3).into();
        let mut whole = NoiseRng::new(5);
        let first = whole.randn(&shape, &Device::Cpu).unwrap();
        let second = whole.randn(&shape, &Device::Cpu).unwrap();
        let mut inner = NoiseRng::new(5);
        let mut part = BatchRows::new(&mut inner, 6, 2).unwrap();
        let part_shape: Shape = (3, 2, 3).into();
        for expected in [first, second] {
            let drawn = part.randn(&part_shape, &Device::Cpu).unwrap();
            let expected = expected.narrow(0, 2, 3).unwrap();
            assert_eq!(
                drawn.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                expected.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn batch_rows_refuse_parts_outside_the_batch() {
        let mut inner = NoiseRng::new(1);
        assert!(BatchRows::new(&mut inner, 4, 4).is_err());
        let mut part = BatchRows::new(&mut inner, 4, 3).unwrap();
        let err = part.randn(&(2, 5).into(), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("batch of 4"), "{err}");
    }
}

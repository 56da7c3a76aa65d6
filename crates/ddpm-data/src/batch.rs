//! The epoch / shard / batch plan and batch assembly.
//!
//! Epoch `e` shuffles all `n` items with a ChaCha8 stream seeded from `(seed, e)`. With
//! `world` data-parallel ranks, the shuffled order is cut into `world` contiguous shards of
//! `n / world` items each; rank `r` takes shard `r`. **Remainder:** the last `n % world`
//! items of the shuffled order (fewer than `world`) are left out of that epoch only; since the
//! order changes every epoch, a different handful is left out each time. So the shards of an
//! epoch are disjoint, cover every item but that remainder, and every rank gets the same
//! number of items and batches. A shard is cut into batches of `batch_size`; the last batch
//! is smaller when `batch_size` does not divide the shard (or dropped with `drop_last`).
//! Horizontal flips are drawn per position of the shuffled order from `(seed, e)`.
//!
//! Everything is a pure function of `(n, batch_size, seed, epoch, rank, world, batch index)`,
//! so a trainer resumes exactly by rebuilding the plan and skipping to the batch index.

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::error::{DataError, Result};
use crate::image_set::ImageSet;

/// The splitmix64 finalizer: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform integer in `0..bound` (bound > 0) by rejection, independent of `rand`'s version.
fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % bound;
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % bound;
        }
    }
}

/// The batch plan of one rank: shuffling, sharding and batching for every epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batches {
    n: usize,
    batch_size: usize,
    seed: u64,
    rank: usize,
    world: usize,
    flip: bool,
    drop_last: bool,
}

impl Batches {
    /// Plans `n` items in batches of `batch_size` for rank `rank` of `world`, no flips, last
    /// partial batch kept. Fails unless `batch_size > 0`, `rank < world` and `n >= world`.
    pub fn new(n: usize, batch_size: usize, seed: u64, rank: usize, world: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Options("batch size must be positive".into()));
        }
        if rank >= world {
            return Err(DataError::Options(format!(
                "rank {rank} is not below world size {world}"
            )));
        }
        if n < world {
            return Err(DataError::Options(format!(
                "{n} items cannot feed {world} ranks"
            )));
        }
        Ok(Self {
            n,
            batch_size,
            seed,
            rank,
            world,
            flip: false,
            drop_last: false,
        })
    }

    /// Enables or disables random horizontal flips (probability 1/2 per item).
    pub fn with_flip(mut self, flip: bool) -> Self {
        self.flip = flip;
        self
    }

    /// Drops the last batch of each shard when it is smaller than `batch_size`. Fails when
    /// that would leave no batch at all.
    pub fn with_drop_last(mut self, drop_last: bool) -> Result<Self> {
        self.drop_last = drop_last;
        if self.batches_per_epoch() == 0 {
            return Err(DataError::Options(format!(
                "drop_last leaves no batch: {} items per rank, batch size {}",
                self.per_rank(),
                self.batch_size
            )));
        }
        Ok(self)
    }

    /// Items per rank per epoch: `n / world`.
    pub fn per_rank(&self) -> usize {
        self.n / self.world
    }

    /// Batches per rank per epoch (the same on every rank).
    pub fn batches_per_epoch(&self) -> usize {
        let per = self.per_rank();
        if self.drop_last {
            per / self.batch_size
        } else {
            per.div_ceil(self.batch_size)
        }
    }

    /// The shuffled order of all `n` items for `epoch` (the same on every rank).
    pub fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ mix(epoch)));
        let mut order: Vec<usize> = (0..self.n).collect();
        for i in (1..self.n).rev() {
            let j = below(&mut rng, i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }

    /// This rank's plan for `epoch`.
    pub fn epoch(&self, epoch: u64) -> EpochPlan {
        let per = self.per_rank();
        let start = self.rank * per;
        let order = self.permutation(epoch);
        let flip_seed = mix(mix(self.seed ^ 0x666c_6970) ^ mix(epoch));
        let flips = (start..start + per)
            .map(|pos| self.flip && mix(flip_seed ^ pos as u64) >> 63 == 1)
            .collect();
        EpochPlan {
            indices: order[start..start + per].to_vec(),
            flips,
            batch_size: self.batch_size,
            n_batches: self.batches_per_epoch(),
        }
    }
}

/// One rank's batches for one epoch: see [`Batches::epoch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    indices: Vec<usize>,
    flips: Vec<bool>,
    batch_size: usize,
    n_batches: usize,
}

impl EpochPlan {
    /// Number of batches in this epoch on this rank.
    pub fn len(&self) -> usize {
        self.n_batches
    }

    /// True when there is no batch.
    pub fn is_empty(&self) -> bool {
        self.n_batches == 0
    }

    /// Item indices and flip flags of batch `i`. Panics when `i >= len()`.
    pub fn batch(&self, i: usize) -> (&[usize], &[bool]) {
        assert!(
            i < self.n_batches,
            "batch {i} out of range: the epoch has {} batches",
            self.n_batches
        );
        let start = i * self.batch_size;
        let end = (start + self.batch_size).min(self.indices.len());
        (&self.indices[start..end], &self.flips[start..end])
    }

    /// All batches in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[usize], &[bool])> + '_ {
        (0..self.n_batches).map(|i| self.batch(i))
    }
}

/// Assembles images `indices` of `set` into an f32 tensor (B, C, H, W) on `device`, with
/// values `x / 255 * 2 - 1` in [-1, 1], mirrored left-right where `flips[k]` is true.
pub fn batch_tensor(
    set: &ImageSet,
    indices: &[usize],
    flips: &[bool],
    device: &Device,
) -> candle_core::Result<Tensor> {
    if indices.len() != flips.len() {
        candle_core::bail!(
            "batch_tensor: {} indices but {} flip flags",
            indices.len(),
            flips.len()
        );
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= set.len()) {
        candle_core::bail!(
            "batch_tensor: index {bad} out of range for {} images",
            set.len()
        );
    }
    let lut: [f32; 256] = std::array::from_fn(|x| x as f32 / 255.0 * 2.0 - 1.0);
    let (c, h, w) = (set.channels(), set.height(), set.width());
    let mut out = Vec::with_capacity(indices.len() * set.image_len());
    for (&i, &flip) in indices.iter().zip(flips) {
        for row in set.image(i).chunks_exact(w) {
            if flip {
                out.extend(row.iter().rev().map(|&x| lut[x as usize]));
            } else {
                out.extend(row.iter().map(|&x| lut[x as usize]));
            }
        }
    }
    Tensor::from_vec(out, (indices.len(), c, h, w), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_equal_and_cover_all_but_the_remainder() {
        let (n, world) = (103, 4);
        let mut seen = vec![0usize; n];
        let mut lens = Vec::new();
        for rank in 0..world {
            let plan = Batches::new(n, 8, 7, rank, world).unwrap().epoch(3);
            lens.push(plan.len());
            for (idx, _) in plan.iter() {
                idx.iter().for_each(|&i| seen[i] += 1);
            }
        }
        assert!(lens.iter().all(|&l| l == lens[0] && l == 4), "{lens:?}"); // 25 per rank -> 4 batches
        assert!(seen.iter().all(|&s| s <= 1), "shards overlap");
        assert_eq!(seen.iter().filter(|&&s| s == 0).count(), n % world);
        let order = Batches::new(n, 8, 7, 0, world).unwrap().permutation(3);
        let left_out: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
        let mut tail = order[n - n % world..].to_vec();
        tail.sort();
        assert_eq!(left_out, tail);
    }

    #[test]
    fn plan_is_a_pure_function_and_reshuffles_each_epoch() {
        let b = Batches::new(50, 6, 42, 1, 2).unwrap().with_flip(true);
        assert_eq!(
            b.epoch(5),
            Batches::new(50, 6, 42, 1, 2)
                .unwrap()
                .with_flip(true)
                .epoch(5)
        );
        assert_ne!(b.epoch(5).batch(0).0, b.epoch(6).batch(0).0);
        assert_ne!(
            b.epoch(5),
            Batches::new(50, 6, 43, 1, 2)
                .unwrap()
                .with_flip(true)
                .epoch(5)
        );
        let flips: Vec<bool> = b.epoch(5).iter().flat_map(|(_, f)| f.to_vec()).collect();
        let ones = flips.iter().filter(|&&f| f).count();
        assert!(ones > 3 && ones < 22, "{ones} flips of 25");
        let no_flip = Batches::new(50, 6, 42, 1, 2).unwrap().epoch(5);
        assert!(no_flip.iter().all(|(_, f)| f.iter().all(|&x| !x)));
        assert_eq!(no_flip.batch(4).0.len(), 1); // 25 = 4 * 6 + 1
        let dropped = Batches::new(50, 6, 42, 1, 2)
            .unwrap()
            .with_drop_last(true)
            .unwrap();
        assert_eq!(dropped.epoch(0).len(), 4);
        assert!(
            Batches::new(50, 30, 0, 0, 2)
                .unwrap()
                .with_drop_last(true)
                .is_err()
        );
        assert!(Batches::new(3, 1, 0, 2, 2).is_err());
        assert!(Batches::new(1, 1, 0, 0, 2).is_err());
    }

    #[test]
    fn batch_tensor_scales_and_flips() {
        let set = ImageSet::new(vec![0, 255, 51, 102, 0, 0, 0, 0], 1, 2, 2).unwrap();
        let t = batch_tensor(&set, &[0, 0], &[false, true], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 1, 2, 2]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let e = |x: f32| x / 255.0 * 2.0 - 1.0;
        assert_eq!(
            v,
            vec![-1.0, 1.0, e(51.0), e(102.0), 1.0, -1.0, e(102.0), e(51.0)]
        );
        assert!(batch_tensor(&set, &[2], &[false], &Device::Cpu).is_err());
        assert!(batch_tensor(&set, &[0], &[], &Device::Cpu).is_err());
    }
}

//! The [`Collective`] trait and the tensor helpers built on it.
//!
//! Tensor collectives flatten all tensors of one call into ONE f32 buffer (one all-reduce per
//! training step, not one per parameter), run the collective on it and split the result back into
//! tensors of the original shapes, dtypes and device.

use crate::error::{DistError, Result};
use candle_core::{DType, Device, Shape, Tensor};

/// How an all-reduce combines the ranks' buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum over ranks.
    Sum,
    /// Element-wise sum over ranks divided by the world size (gradient averaging).
    Mean,
}

/// Collective communication among the ranks of a data-parallel world.
///
/// Every rank must make the same sequence of calls with buffers of the same lengths; the TCP
/// backend checks this and fails with [`DistError::Mismatch`]. Results are bit-identical on all
/// ranks. After any error the collective is unusable: drop it and exit.
pub trait Collective {
    /// This process's rank.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn world_size(&self) -> usize;

    /// Short backend name for logs: `"tcp"` or `"nccl"`.
    fn backend(&self) -> &'static str;

    /// All-reduces `buf` in place.
    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()>;

    /// Overwrites `buf` on every rank with `root`'s `buf`.
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()>;

    /// Returns once every rank has entered the barrier.
    fn barrier(&mut self) -> Result<()>;

    /// All-reduces a list of tensors as one flat f32 buffer; returns tensors of the same shapes,
    /// dtypes and device. Tensors of other float dtypes are reduced in f32.
    fn all_reduce_tensors(&mut self, tensors: &[Tensor], op: ReduceOp) -> Result<Vec<Tensor>> {
        host_all_reduce_tensors(self, tensors, op)
    }

    /// Replaces every rank's tensors with `root`'s (shapes must agree on all ranks).
    fn broadcast_tensors(&mut self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        host_broadcast_tensors(self, tensors, root)
    }

    /// Gradient averaging: [`Collective::all_reduce_tensors`] with [`ReduceOp::Mean`].
    fn all_reduce_mean(&mut self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        self.all_reduce_tensors(tensors, ReduceOp::Mean)
    }

    /// [`Collective::all_reduce_tensors`] with [`ReduceOp::Sum`].
    fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        self.all_reduce_tensors(tensors, ReduceOp::Sum)
    }

    /// Mean of one scalar over the ranks (e.g. the step's loss, for logging).
    fn mean_scalar(&mut self, value: f32) -> Result<f32> {
        let mut buf = [value];
        self.all_reduce(&mut buf, ReduceOp::Mean)?;
        Ok(buf[0])
    }
}

/// [`Collective::all_reduce_tensors`] through host memory: flatten, copy out, reduce, copy back.
pub(crate) fn host_all_reduce_tensors<C: Collective + ?Sized>(
    c: &mut C,
    tensors: &[Tensor],
    op: ReduceOp,
) -> Result<Vec<Tensor>> {
    let Some((flat, layout)) = flatten(tensors)? else {
        c.all_reduce(&mut [], op)?;
        return Ok(Vec::new());
    };
    let mut buf = to_host(&flat)?;
    c.all_reduce(&mut buf, op)?;
    unflatten(&from_host(buf, &layout.device)?, &layout)
}

/// [`Collective::broadcast_tensors`] through host memory.
pub(crate) fn host_broadcast_tensors<C: Collective + ?Sized>(
    c: &mut C,
    tensors: &[Tensor],
    root: usize,
) -> Result<Vec<Tensor>> {
    let Some((flat, layout)) = flatten(tensors)? else {
        c.broadcast(&mut [], root)?;
        return Ok(Vec::new());
    };
    let mut buf = to_host(&flat)?;
    c.broadcast(&mut buf, root)?;
    unflatten(&from_host(buf, &layout.device)?, &layout)
}

/// Where each tensor of a flattened list came from.
pub(crate) struct FlatLayout {
    /// The device of every tensor (and of the flat buffer).
    pub device: Device,
    /// Shape and dtype of each tensor, in order.
    pub parts: Vec<(Shape, DType)>,
}

/// Concatenates `tensors` into one contiguous 1-D f32 tensor on their device; `None` for no tensors.
pub(crate) fn flatten(tensors: &[Tensor]) -> Result<Option<(Tensor, FlatLayout)>> {
    let Some(first) = tensors.first() else {
        return Ok(None);
    };
    let device = first.device().clone();
    let count = tensors.len();
    let mut flat = Vec::with_capacity(count);
    let mut parts = Vec::with_capacity(count);
    for (index, t) in tensors.iter().enumerate() {
        if !t.device().same_device(&device) {
            return Err(DistError::MixedDevices {
                index,
                expected: device.location(),
                found: t.device().location(),
            });
        }
        let wrap = |source| DistError::Tensor {
            index,
            count,
            source,
        };
        parts.push((t.shape().clone(), t.dtype()));
        flat.push(
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .map_err(wrap)?,
        );
    }
    let flat = Tensor::cat(&flat, 0).map_err(|source| DistError::Candle {
        what: "concatenating the tensors into one buffer",
        source,
    })?;
    Ok(Some((flat, FlatLayout { device, parts })))
}

/// Splits a flat f32 buffer back into tensors of `layout`'s shapes and dtypes.
pub(crate) fn unflatten(flat: &Tensor, layout: &FlatLayout) -> Result<Vec<Tensor>> {
    let count = layout.parts.len();
    let mut offset = 0;
    let mut out = Vec::with_capacity(count);
    for (index, (shape, dtype)) in layout.parts.iter().enumerate() {
        let n = shape.elem_count();
        let t = flat
            .narrow(0, offset, n)
            .and_then(|t| t.reshape(shape))
            .and_then(|t| t.to_dtype(*dtype))
            .map_err(|source| DistError::Tensor {
                index,
                count,
                source,
            })?;
        out.push(t);
        offset += n;
    }
    Ok(out)
}

fn to_host(flat: &Tensor) -> Result<Vec<f32>> {
    flat.to_vec1::<f32>().map_err(|source| DistError::Candle {
        what: "copying the flat buffer to the host",
        source,
    })
}

fn from_host(buf: Vec<f32>, device: &Device) -> Result<Tensor> {
    let n = buf.len();
    Tensor::from_vec(buf, n, device).map_err(|source| DistError::Candle {
        what: "copying the reduced buffer back to the device",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_then_unflatten_restores_shapes_dtypes_and_values() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 6., &dev)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let b = Tensor::new(&[7f64, 8.], &dev).unwrap();
        let c = Tensor::new(9f32, &dev).unwrap();
        let (flat, layout) = flatten(&[a.t().unwrap(), b.clone(), c.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(
            flat.to_vec1::<f32>().unwrap(),
            [0., 3., 1., 4., 2., 5., 7., 8., 9.]
        );
        let back = unflatten(&flat, &layout).unwrap();
        assert_eq!(back[0].dims(), &[3, 2]);
        assert_eq!(
            back[0].to_vec2::<f32>().unwrap(),
            a.t().unwrap().to_vec2::<f32>().unwrap()
        );
        assert_eq!(back[1].dtype(), DType::F64);
        assert_eq!(back[1].to_vec1::<f64>().unwrap(), [7., 8.]);
        assert_eq!(back[2].dims(), &[] as &[usize]);
        assert!(flatten(&[]).unwrap().is_none());
    }
}

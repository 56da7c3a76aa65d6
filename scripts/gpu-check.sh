#!/usr/bin/env bash
# The GPU check of docs/gpu.md and docs/performance.md, in one run on the GPU machine.
#
# Prepare on a development machine (no GPU needed; see docs/gpu.md):
#   source ../shared/cuda/setup.sh
#   CUDA_COMPUTE_CAP=90 cargo build --release -p trainer -p xtask -p sampler -p ddpm-dist --features cuda,nccl
#   mkdir -p .gpu && for b in trainer xtask sampler ddpm-dist-check; do xz -T2 -c target/release/$b > .gpu/$b.xz; done
#   cp scripts/gpu-check.sh .gpu/ && cp -r ../shared/reference .gpu/reference
# Then on the GPU machine, from the checkout: bash .gpu/gpu-check.sh   (results in $OUT or ./gpu-results)
#
# It (a) runs the NCCL backend with world size 1 and a real training run of 300 steps on
# MNIST-shaped data, (b) times a training step of the reference anime model (3x64x64,
# batch 512, [32,64,128,256]) and of the small MNIST model (1x28x28, batch 512, [10,20,40,80]),
# (c) times sampling 81 images x 1000 DDPM steps for both, and prints PyTorch's H100 figures
# (../shared/reference/torch-anchor-h100.jsonl) beside them.
set -euo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out" bin
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
for b in trainer xtask sampler ddpm-dist-check; do
  xz -dc ".gpu/$b.xz" > "bin/$b" && chmod +x "bin/$b"
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

echo "== (a) NCCL all-reduce, world size 1"
bin/ddpm-dist-check --procs 1 --backend nccl --elems 19432142 --steps 20 2>&1 | tee "$out/nccl.txt"
echo "== (a) 300 training steps on CUDA (embedded MNIST digits)"
/usr/bin/time -v bin/trainer --device cuda --dataset embedded --preset quick --max-steps 300 \
  --out "$out/run-mnist" 2>&1 | tail -40 | tee "$out/train-run.txt"

echo "== (b) training step, images/s (PyTorch H100: anime 5,105 img/s; MNIST 23,869 img/s)"
bin/xtask bench train --device cuda --image 3x64x64 --channels 32,64,128,256 --batch 512 --reps 20 --warmup 3 \
  2>&1 | tee "$out/bench-train-anime.txt"
bin/xtask bench train --device cuda --image 1x28x28 --channels 10,20,40,80 --batch 512 --reps 20 --warmup 3 \
  2>&1 | tee "$out/bench-train-mnist.txt"

echo "== (c) sampling 81 images x 1000 DDPM steps (PyTorch H100: anime 8.32 s; MNIST 6.92 s)"
bin/xtask bench sample --device cuda --image 3x64x64 --channels 32,64,128,256 --batch 81 --reps 50 --warmup 5 \
  2>&1 | tee "$out/bench-sample-anime.txt"
bin/xtask bench sample --device cuda --image 1x28x28 --channels 10,20,40,80 --batch 81 --reps 50 --warmup 5 \
  2>&1 | tee "$out/bench-sample-mnist.txt"
echo "(one sampling forward x 1000 = the 1000-step figure; the DDPM update itself is a few element-wise ops)"
time bin/sampler --device cuda --checkpoint "$out/run-mnist" --n 81 --out "$out/mnist-ddpm1000.png" 2>&1 | tee "$out/sample-mnist.txt"

echo "== PyTorch reference figures (same card kind, their run)"
grep -h '"name"' .gpu/reference/torch-anchor-h100.jsonl | cut -c1-200 | tee "$out/torch.txt" || true

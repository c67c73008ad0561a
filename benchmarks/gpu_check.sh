#!/usr/bin/env bash
# One prepared run for a lent GPU (device tool): the project beside PyTorch / imbalanced-learn, in one go.
# Usage on the device machine (repo root):  bash benchmarks/gpu_check.sh   (writes JSON under $OUT)
# The GPU image has jax, flax, optax, orbax-checkpoint, torch, torchvision, scikit-learn; no TensorFlow and no
# imbalanced-learn: carry wheels in .whl/ (imbalanced-learn, sklearn-compat, ml-collections) if wanted.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 300 python3 benchmarks/autoencoder_step.py --presets amoled_dent_200 amoled_scratch_396 --batch 100 256 \
  --dtypes bfloat16 float32 --torch-modes fp32 bf16_cl --json "$OUT/autoencoder_step.json" 2>&1 | tee "$OUT/ae.log" | tail -15
timeout 150 python3 benchmarks/smote.py --full --out "$OUT/smote.json" 2>&1 | tee "$OUT/smote.log" | tail -12
timeout 150 python3 benchmarks/classifier_step.py --models inception_v3 resnet50 --image-size 299 --batch 64 \
  --dtypes bfloat16 --torch-modes fp32 bf16_cl --json "$OUT/classifier_step.json" 2>&1 | tee "$OUT/cls.log" | tail -8

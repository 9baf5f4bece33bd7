#!/usr/bin/env bash
# The GPU check, one prepared script of about 5 minutes:
#   1. ResNet-50 bfloat16 training images/s at the largest batch that fits
#      (synthetic data already on the device; the batch list is tried from the top),
#   2. ResNet-50 bfloat16 eval images/s at that batch,
#   3. the tf.data ImageNet pipeline's images/s on this machine's cores.
# Goal on one H100: >= 7,000 img/s training (MLPerf Training v4.0's per-GPU level).
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]     # default: $OUT, else ./gpu_check
#
# Needs the project's requirements with a CUDA jaxlib on the same JAX version
# (pip install -r requirements.txt 'jax[cuda12]==0.10.2'). Each result is one
# JSON line in RESULTS_DIR/*.json; the log is RESULTS_DIR/log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-${OUT:-gpu_check}}
mkdir -p "$results"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
exec > >(tee "$results/log.txt") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c 'import jax; print("jax", jax.__version__, jax.devices())' || exit 1

best=''
for batch in ${BATCHES:-512 256 128}; do
  echo "== ResNet-50 train, bfloat16, batch $batch"
  if timeout 150 $PY -m benchmarks.train_step --model=resnet50 --dtype=bfloat16 \
      --batch="$batch" --steps=20 --no-torch | tee "$results/train_$batch.txt"; then
    tail -1 "$results/train_$batch.txt" > "$results/train.json"
    best=$batch
    break
  fi
done
[ -n "$best" ] || { echo 'no batch fitted'; exit 1; }

echo "== ResNet-50 eval, bfloat16, batch $best"
timeout 90 $PY -m benchmarks.train_step --model=resnet50 --mode=eval --dtype=bfloat16 \
  --batch="$best" --steps=20 --no-torch | tee "$results/eval.txt" && tail -1 "$results/eval.txt" > "$results/eval.json"

echo "== tf.data ImageNet input pipeline ($(nproc) cores)"
timeout 90 $PY -m benchmarks.input_pipeline | tee "$results/input_pipeline.txt"

#!/usr/bin/env bash
# The GPU check, one prepared script of about 3-5 minutes:
#   1. ResNet-50 bfloat16 training images/s at the largest batch that fits
#      (synthetic data already on the device; the batch list is tried from the top),
#   2. ResNet-50 bfloat16 eval images/s at that batch,
#   3. the tf.data ImageNet pipeline's images/s on this machine's cores (skipped,
#      saying so, where TensorFlow or TFDS is not installed: 1 and 2 do not need them).
# Goal on one H100/H200: >= 7,000 img/s training (MLPerf Training v4.0's per-GPU level).
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]     # default: $OUT, else ./gpu_check
#
# Needs a Python with a CUDA jax (and jaxlib) on the project's JAX version, flax,
# optax and orbax-checkpoint. ml_collections and absl-py, pure Python, may be
# missing there: where they are, they are unpacked onto PYTHONPATH (not installed)
# from the wheels in benchmarks/gpu_wheels/, which `make gpu-wheels` downloads on a
# machine that reaches PyPI (the versions requirements.txt pins). The folder is not
# committed: a machine without internet gets it with the working tree (the device
# tool's `carry: ["benchmarks/gpu_wheels"]`). Each result is one JSON line in
# RESULTS_DIR/*.json; the log is RESULTS_DIR/log.txt. Exit status 0 when every
# part that ran succeeded.
#
# Overrides for a dry run on a CPU: PY, MODEL (resnet50), BATCHES ("512 256 128"),
# STEPS (20), e.g. MODEL=resnet20 BATCHES=8 STEPS=2.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-${OUT:-gpu_check}}
mkdir -p "$results"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL=${MODEL:-resnet50}
STEPS=${STEPS:-20}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
exec > >(tee "$results/log.txt") 2>&1

has() {  # has MODULE: importable by $PY (found, not imported)
  $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null
}

# A pure-Python wheel is a zip of importable packages: unpacked onto PYTHONPATH, it
# needs neither pip nor the network, and leaves the machine's Python as it is.
deps=$(mktemp -d)
trap 'rm -rf "$deps"' EXIT
for need in ml_collections:ml_collections absl:absl_py; do  # module:wheel name
  module=${need%%:*}
  has "$module" && continue
  wheel=$(ls benchmarks/gpu_wheels/"${need#*:}"-*-py3-none-any.whl 2>/dev/null | head -1)
  if [ -z "$wheel" ]; then
    echo "$module is not installed and benchmarks/gpu_wheels/ has no wheel of it:" \
      'run `make gpu-wheels` where PyPI is reachable and carry that folder'
    exit 1
  fi
  $PY -m zipfile -e "$wheel" "$deps" && echo "$module: from $wheel"
done
export PYTHONPATH="$deps${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c 'import jax; print("jax", jax.__version__, jax.devices())' || exit 1

best=''
for batch in ${BATCHES:-512 256 128}; do
  echo "== $MODEL train, bfloat16, batch $batch"
  if timeout 150 $PY -m benchmarks.train_step --model="$MODEL" --dtype=bfloat16 \
      --batch="$batch" --steps="$STEPS" --no-torch | tee "$results/train_$batch.txt"; then
    tail -1 "$results/train_$batch.txt" > "$results/train.json"
    best=$batch
    break
  fi
done
[ -n "$best" ] || { echo 'no batch fitted'; exit 1; }

status=0
echo "== $MODEL eval, bfloat16, batch $best"
if timeout 90 $PY -m benchmarks.train_step --model="$MODEL" --mode=eval --dtype=bfloat16 \
    --batch="$best" --steps="$STEPS" --no-torch | tee "$results/eval.txt"; then
  tail -1 "$results/eval.txt" > "$results/eval.json"
else
  status=1
fi

echo "== tf.data ImageNet input pipeline ($(nproc) cores)"
if has tensorflow && has tensorflow_datasets; then
  timeout 90 $PY -m benchmarks.input_pipeline | tee "$results/input_pipeline.txt" || status=1
else
  echo 'skipped: TensorFlow or TFDS is not installed here (train and eval above do not need them)'
fi
exit $status

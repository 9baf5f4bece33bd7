#!/usr/bin/env bash
# The GPU check, one prepared script of about 3-5 minutes:
#   1. ResNet-50 bfloat16 training images/s at the largest batch that fits
#      (synthetic data already on the device; the batch list is tried from the top),
#   2. ResNet-50 bfloat16 eval images/s at that batch,
#   3. the tf.data ImageNet pipeline's images/s on this machine's cores (skipped,
#      saying so, where TensorFlow or TFDS is not installed: 1 and 2 do not need them),
#   4. CIFAR-10 Table 6 on the device pipeline (benchmarks.table6, random CIFAR-10-shaped
#      files, no TFDS): ResNet-20's step at train.num_seeds 1, 4, 16 (the per-seed cost),
#      then every network of Table 6 at 5 seeds, and the hours of all at 64k steps.
# Goal on one H100/H200: >= 7,000 img/s training (MLPerf Training v4.0's per-GPU level).
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]     # default: $OUT, else ./gpu_check
#
# Needs a Python with a CUDA jax and jaxlib (the machine's own version), flax, optax
# and orbax-checkpoint. What our step needs beside JAX is pure Python and comes, where
# the machine lacks it, from the wheels in benchmarks/gpu_wheels/ (the versions
# requirements.txt pins, unpacked onto PYTHONPATH, not installed): ml_collections and
# absl-py where they are missing, flax and optax where a two-step smoke run fails with
# the machine's own. `make gpu-wheels` downloads them on a machine that reaches PyPI;
# the folder is not committed: a machine without internet gets it with the working
# tree (the device tool's `carry: ["benchmarks/gpu_wheels"]`). Each result is one
# JSON line in RESULTS_DIR/*.json; the log is RESULTS_DIR/log.txt. Exit status 0 when
# every part that ran succeeded.
#
# Overrides for a dry run on a CPU: PY, MODEL (resnet50), BATCHES ("2048 1024 512"),
# STEPS (20), TABLE6_NETWORKS (all of Table 6), e.g. MODEL=resnet20 BATCHES=8 STEPS=2
# TABLE6_NETWORKS=20,plain20.
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
export PYTHONPATH="$deps${PYTHONPATH:+:$PYTHONPATH}"
unpack() {  # unpack WHEEL_NAME: the pinned wheel of it from benchmarks/gpu_wheels/
  local wheel
  wheel=$(ls benchmarks/gpu_wheels/"$1"-*-py3-none-any.whl 2>/dev/null | head -1)
  if [ -z "$wheel" ]; then
    echo "benchmarks/gpu_wheels/ has no $1 wheel:" \
      'run `make gpu-wheels` where PyPI is reachable and carry that folder'
    return 1
  fi
  $PY -m zipfile -e "$wheel" "$deps" && echo "$1: from $wheel"
}
for need in ml_collections:ml_collections absl:absl_py; do  # module:wheel name
  has "${need%%:*}" || unpack "${need#*:}" || exit 1
done

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
versions() {  # the versions the step will import (the first on the path), found, not imported
  $PY -c 'import importlib.metadata as m
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
  try: print(name, m.version(name), end="  ")
  except m.PackageNotFoundError: print(name, "missing", end="  ")
print()'
}
versions
$PY -c 'import jax; print(jax.devices())' || exit 1

# The machine's own JAX runs the step. Its flax and optax are used where our code runs
# with them (a two-step ResNet-20); else the versions requirements.txt pins.
smoke() {
  timeout 150 $PY -m benchmarks.train_step --model=resnet20 --batch=8 --steps=2 --no-torch \
    > "$results/smoke.txt" 2>&1
}
if ! smoke; then
  tail -5 "$results/smoke.txt"
  echo "our step fails with this machine's flax/optax: unpacking the pinned ones"
  unpack flax && unpack optax && versions && smoke \
    || { tail -20 "$results/smoke.txt"; exit 1; }
fi
echo "smoke step: $(tail -1 "$results/smoke.txt")"

# PyTorch's step beside ours (torchvision, bfloat16 autocast) where torch is installed.
peer=--no-torch
has torch && has torchvision && peer=''
best=''
for batch in ${BATCHES:-2048 1024 512}; do
  echo "== $MODEL train, bfloat16, batch $batch"
  if timeout 240 $PY -m benchmarks.train_step --model="$MODEL" --dtype=bfloat16 \
      --batch="$batch" --steps="$STEPS" $peer | tee "$results/train_$batch.txt"; then
    tail -1 "$results/train_$batch.txt" > "$results/train.json"
    best=$batch
    break
  fi
done
[ -n "$best" ] || { echo 'no batch fitted'; exit 1; }

status=0
echo "== $MODEL eval, bfloat16, batch $best"
if timeout 150 $PY -m benchmarks.train_step --model="$MODEL" --mode=eval --dtype=bfloat16 \
    --batch="$best" --steps="$STEPS" $peer | tee "$results/eval.txt"; then
  tail -1 "$results/eval.txt" > "$results/eval.json"
else
  status=1
fi

echo "== tf.data ImageNet input pipeline ($(nproc) cores)"
if has tensorflow && has tensorflow_datasets; then
  timeout 90 $PY -m benchmarks.input_pipeline --seconds 4 | tee "$results/input_pipeline.txt" || status=1
else
  echo 'skipped: TensorFlow or TFDS is not installed here (train and eval above do not need them)'
fi

echo "== CIFAR-10 Table 6, data.pipeline=device"
if timeout 120 $PY -m benchmarks.table6 --networks=20 --seeds=1,4,16 | tee "$results/seeds.txt"; then
  tail -1 "$results/seeds.txt" > "$results/seeds.json"
else
  status=1
fi
networks=${TABLE6_NETWORKS:+--networks=$TABLE6_NETWORKS}
if timeout 300 $PY -m benchmarks.table6 --seeds=5 $networks | tee "$results/table6.txt"; then
  tail -1 "$results/table6.txt" > "$results/table6.json"
else
  status=1
fi
exit $status

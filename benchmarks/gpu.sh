#!/usr/bin/env bash
# The GPU figures in benchmarks/README.md, in one run on a CUDA machine whose python3 already has
# torch (and pytest for the tests):   bash benchmarks/gpu.sh [LOG_DIR]
# Each step has its own time limit, so one that fails or runs long leaves the others' figures.
# In this order, within DEADLINE seconds in all (default 540):
#   - the Burda et al. network (mlp 784-200-200-50, Bernoulli, diagonal posterior): 1.5 minutes of
#     training, then `vaekit eval --k 5000` on all 10,000 test images in fp32;
#   - the assignment's conv nets (K=16, Bernoulli): `vaekit eval --k 5000` on 1,000 test images;
#   - the tests (not slow), with "auto" resolving to this GPU;
#   - the mlp's eval in bf16; the conv eval on all 10,000 test images (8.6 hours on the 2-core CPU);
#   - train_throughput.py and precision.py on the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu-logs}
mkdir -p "$LOG"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RUNS=$(mktemp -d)
DEADLINE=${DEADLINE:-540}  # seconds for the whole script: each step gets at most what is left
step() { local name=$1 limit=$2; shift 2; local left=$((DEADLINE - SECONDS)); ((left < limit)) && limit=$left
  ((limit < 10)) && { echo "== $name: skipped, ${left}s left of ${DEADLINE}s"; return; }
  echo "== $name (limit ${limit}s): $*"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$LOG/$name.log"; echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"; }

nvidia-smi -L; $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())'
grep -m1 'model name' /proc/cpuinfo; nproc

MLP=(--arch mlp --latent-dim 50 --hidden 200,200 --activation tanh --likelihood bernoulli --posterior diagonal
     --binarize dynamic --batch-size 100 --lr 1e-3 --kl-warmup 5000 --no-calibrated --epochs 100000)
step mlp-train 200 $PY -m vaekit train "${MLP[@]}" --time-budget 1.5 --device cuda --no-progress --out "$RUNS/mlp"
step mlp-eval-fp32 150 $PY -m vaekit eval "$RUNS/mlp" --k 5000 --device cuda --precision fp32 --no-progress

CONV=(--preset assignment --latent-dim 16 --likelihood bernoulli --posterior diagonal --binarize dynamic --lr 5e-4)
step conv-train 120 $PY -m vaekit train "${CONV[@]}" --max-steps 500 --device cuda --no-progress --out "$RUNS/conv"
step conv-eval-1000 90 $PY -m vaekit eval "$RUNS/conv" --k 5000 --limit 1000 --device cuda --precision fp32 --no-progress
step tests 240 env OMP_NUM_THREADS=1 $PY -m pytest -q -p no:cacheprovider -n 12 --tb=short -rfE tests  # one thread per worker
step mlp-eval-bf16 150 $PY -m vaekit eval "$RUNS/mlp" --k 5000 --device cuda --precision bf16 --no-progress
step conv-eval-all 300 $PY -m vaekit eval "$RUNS/conv" --k 5000 --device cuda --precision fp32 --no-progress

step train-throughput 120 $PY benchmarks/train_throughput.py --device cuda --steps 50
step precision 200 $PY benchmarks/precision.py --device cuda
rm -rf "$RUNS"

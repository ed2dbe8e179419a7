#!/usr/bin/env bash
# Every benchmark of results/bench/ on one GPU, in order, within a wall-clock budget, then the README.
#
#   bash benchmarks/gpu_all.sh [budget_seconds=1800] [python=python3]
#
# Order: the ACM layer kernel (issue targets 1), ALaST's training step (3), the KV presses at the default
# rounds (2), the ACM-ViT-B model (1, model level). A benchmark starts only with at least 90 s of budget
# left and is stopped when the budget runs out; each writes its log to logs/bench/<name>.log and its
# CSV and figure to results/bench/ only on success (the scripts write atomically at the end), so a
# stopped benchmark leaves the committed numbers as they were. KVPRESS_PATH, if set, goes ahead of
# PYTHONPATH for the KV benchmark only, so that kvpress's presses run beside the repository's: on a box
# without a package index, carry kvpress and its import-time packages without transformers, e.g.
# `pip install --no-deps --target .kvpress_slim kvpress==0.5.5 cachetools fire termcolor datasets dill
# multiprocess xxhash` (kvpress presses that fail on the box's transformers are left out, with the reason).
set -u
budget=${1:-1800}
python=${2:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

run() {
  local name=$1; shift
  local left=$((budget - SECONDS))
  if [ "$left" -lt 90 ]; then echo "$name: skipped, ${left} s of budget left"; return; fi
  timeout "$left" "$python" "$@" > "logs/bench/$name.log" 2>&1
  echo "$name: exit $? after ${SECONDS} s"
}

if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: these benchmarks are meant for a GPU (make bench-alast and make bench-kv also run on a CPU)"
  exit 1
fi
mkdir -p logs/bench
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
run acm_kernel benchmarks/acm_kernel.py
run alast_step benchmarks/alast_step.py
PYTHONPATH="${KVPRESS_PATH:-}${KVPRESS_PATH:+:}${PYTHONPATH:-}" run kv_cache benchmarks/kv_cache.py
run acm_vit benchmarks/acm_vit.py
"$python" benchmarks/readme.py

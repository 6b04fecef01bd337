#!/usr/bin/env bash
# One-GPU benchmark (issue 14 item 5): sampler images/s and forward MFU
# (float32 and bfloat16), stage-2 train-step MFU (bf16, largest batch that
# fits), stage-1 train-step MFU, peak device memory. At most 5 minutes
# (a 300 s wall-clock timeout); writes benchmarks/results/gpu.json, after
# every measurement, so a timeout still leaves the ones that finished.
#
#   bash benchmarks/gpu.sh            # on the GPU machine
#   bash benchmarks/gpu.sh --tiny     # CPU-sized check of the script itself
#                                     # (writes ${TMPDIR:-/tmp}/gpu_tiny.json)
#
# Extra arguments go to benchmarks/gpu.py (see its --help). Installs
# nothing: it expects the repository's requirements and a CUDA jax. If the
# machine lacks them, once:
#   python -m pip install -e . "jax[cuda12]"
# Python: $PYTHON, else the repository's .venv/bin/python, else python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
else
  PY="$(command -v python3 || command -v python)"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Let the largest stage-2 batch use most of the card (jax takes 75% by
# default); override by setting it before the call.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
OUT="$ROOT/benchmarks/results/gpu.json"
for arg in "$@"; do  # a tiny (CPU) run never replaces the GPU figures
  if [[ "$arg" == "--tiny" ]]; then OUT="${TMPDIR:-/tmp}/gpu_tiny.json"; fi
done
LIMIT_S="${GPU_BENCH_TIMEOUT_S:-300}"

echo "python: $PY"
"$PY" -c 'import jax; print("jax", jax.__version__, "devices:", jax.devices())' \
  || echo "warning: could not list jax devices (see above)" >&2
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version \
    --format=csv || true
fi

# gpu.py stops starting new work at --budget_s (270 s by default); the
# timeout is the hard stop. A later --out among "$@" wins over this one.
rc=0
timeout --kill-after=10 "$LIMIT_S" "$PY" benchmarks/gpu.py --out="$OUT" "$@" \
  || rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "gpu.py hit the ${LIMIT_S} s limit; partial results in $OUT" >&2
elif [[ $rc -ne 0 ]]; then
  echo "gpu.py exited with status $rc; whatever finished is in $OUT" >&2
fi
exit "$rc"

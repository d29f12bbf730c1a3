#!/usr/bin/env bash
# The GPU benchmarks in one go, within 8 minutes: equitrain-jax against mace-torch on the same
# (random) weights of the MACE-MP-0 medium architecture, 128 channels.
#
#   inference      benchmarks/inference.py   energy+forces, diamond Si, 64 / 512 / 4096 atoms, float32
#   Hessian        benchmarks/hessian.py     full Hessian (jax-full) vs get_hessian, 16 and 64 atoms, float64
#   training step  benchmarks/train_step.py  full and LoRA fine-tuning steps, float32
#   cuequivariance benchmarks/cueq.py         e3nn vs cuequivariance backend on the same weights:
#                                             inference (float32) and full Hessians (float64); runs
#                                             only if cuequivariance-jax is importable
#
# Each writes its JSON under $OUT (default benchmarks/results/gpu) as it goes, so a stage cut off
# by its time share keeps what it measured; gpu.log holds everything printed.
#
# On the GPU machine (its image has jax with CUDA, flax, optax, orbax, torch and numpy, not
# e3nn-jax, jraph, ase, phonopy or mace-torch): first, here, from the repository root,
#     bash ../shared/device/fetch-wheels.sh
# (add `cuequivariance cuequivariance-jax cuequivariance-ops-jax-cu12` as arguments for the
# cuequivariance stage) which downloads the missing wheels into .whl/ (keep it out of git); send .whl with the working
# tree and run `bash benchmarks/gpu.sh` there.  The wheels are installed into $GPU_SH_SITE
# (default /tmp/site) only if a package is missing, so the script also runs in a full environment.
#
#   GPU_SH_SMOKE=1     tiny sizes (16 channels, 64 atoms, Si16, one timed step): checks the flow
#                      on any machine, CPU included (give it GPU_SH_BUDGET=1500 on a busy CPU)
#   GPU_SH_BUDGET=480  seconds for the whole script; each stage gets its share of what is left
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/results/gpu}"
SMOKE="${GPU_SH_SMOKE:-0}"
BUDGET="${GPU_SH_BUDGET:-480}"
SITE="${GPU_SH_SITE:-/tmp/site}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

missing=$("$PYTHON" -c '
import importlib.util
print(" ".join(m for m in ("e3nn_jax", "jraph", "ase", "phonopy", "mace", "vesin", "seekpath")
               if importlib.util.find_spec(m) is None))')
if [ -n "$missing" ]; then
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu.sh: error: $missing not importable and no wheels in .whl/: run bash ../shared/device/fetch-wheels.sh from the repository root first" >&2
    exit 2
  fi
  say "installing .whl/ into $SITE (missing: $missing)"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    >>"$LOG" 2>&1 || { echo "gpu.sh: error: installing .whl/ failed (see $LOG)" >&2; exit 2; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the GPU in the inference processes

DEVICE=$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
"$PYTHON" -c '
import platform, jax, torch
print(f"machine: {platform.node()}, {jax.devices()[0].device_kind} (jax {jax.__version__}, {jax.default_backend()}), "
      f"torch {torch.__version__}" + (f" on {torch.cuda.get_device_name()}" if torch.cuda.is_available() else " on CPU"))
' 2>&1 | tee -a "$LOG"
say "mace-torch on $DEVICE; smoke=$SMOKE; budget ${BUDGET} s; results in $OUT"

if [ "$SMOKE" = 1 ]; then
  INFERENCE=(--sizes 64 --channels 16 --repeats 2)
  HESSIAN=(--structures Si16 --channels 16 --repeats 2 --repeat-seconds 5)
  TRAIN=(--channels 16 --steps 1 --batch-size 4)
  CUEQ=(--channels 16 --sizes 64 --hessian Si16 --repeats 2)
else
  INFERENCE=(--sizes 64 512 4096 --channels 128 --repeats 5)
  HESSIAN=(--structures Si16,Si64 --channels 128 --repeats 3 --repeat-seconds 20)
  TRAIN=(--channels 128 --steps 10 --batch-size 4)
  CUEQ=(--channels 128 --sizes 64 512 4096 --hessian Si16 Si64 --repeats 5)
fi

# stage NAME SHARE COMMAND...: run with a time limit of SHARE (per cent) of the budget left
# (SECONDS counts from the script's start: the installation is inside the budget)
stage() {
  local name=$1 share=$2; shift 2
  local left=$((BUDGET - SECONDS))
  local limit=$((left * share / 100))
  if [ "$limit" -lt 10 ]; then say "== $name: skipped, ${left} s of the budget left"; return; fi
  say "== $name (at most ${limit} s): $*"
  timeout --kill-after=5 "$limit" "$PYTHON" "$@" 2>&1 | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  [ "$status" = 0 ] || say "== $name: exit status $status$([ "$status" = 124 ] && echo ' (out of time; JSON holds what finished)')"
}

MEMORY=(--memory-gb 0)  # no address-space limit: CUDA reserves more virtual memory than any useful limit
stage inference 40 benchmarks/inference.py --models mace-mp0-medium --dtypes float32 --device "$DEVICE" \
  "${MEMORY[@]}" "${INFERENCE[@]}" --json "$OUT/inference.json"
stage hessian 45 benchmarks/hessian.py --methods jax-full,torch-hess --device "$DEVICE" --timeout 300 \
  "${HESSIAN[@]}" --save "$OUT/hessian.json"
stage train-step 60 benchmarks/train_step.py --dtypes float32 --materials Si --device "$DEVICE" --timeout 300 \
  "${TRAIN[@]}" --save "$OUT/train_step.json"
if "$PYTHON" -c 'import cuequivariance_jax' >/dev/null 2>&1; then
  stage cuequivariance 100 benchmarks/cueq.py "${CUEQ[@]}" --json "$OUT/cueq.json"
else
  say "== cuequivariance: skipped, cuequivariance-jax not importable (see the wheels note above)"
fi
say "done in ${SECONDS} s"

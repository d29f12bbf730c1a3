#!/usr/bin/env bash
# The GPU benchmarks in one go, within 8 minutes: equitrain-jax against mace-torch on the same
# (random) weights of the MACE-MP-0 medium architecture, 128 channels.
#
#   inference      benchmarks/inference.py   energy+forces, diamond Si, 64 / 512 / 4096 atoms, float32
#   cuequivariance benchmarks/cueq.py         e3nn vs cuequivariance backend on the same weights:
#                                             inference (float32) and full Hessians (float64); runs
#                                             only if cuequivariance-jax is importable
#   training step  benchmarks/train_step.py  full and LoRA fine-tuning steps, float32
#   Hessian        benchmarks/hessian.py     full Hessian (jax-full) vs get_hessian, 16 and 64 atoms, float64
#   many materials benchmarks/phonons_many.py  phonons of the first crystals of its list with SevenNet-0
#                                             (float32): our batched list against our one-by-one loop;
#                                             runs only if a converted SevenNet-0 is at $GPU_SH_SEVENNET
#                                             (default .gpu/sevennet0: `equitrain-jax convert --pretrained
#                                             sevennet-0 -o .gpu/sevennet0`, carried with the tree); torch-sim's
#                                             side needs sevenn and torch-sim wheels that do not fit the
#                                             64 MiB a call carries beside cuequivariance's
#
# What fits: on an H200 (2026-11-30) the machine's start took about 2 min of a 15-minute lease; a call
# with GPU_SH_STAGES=inference,cuequivariance,train-step and GPU_SH_BUDGET=450 finished inference and
# training in 396 s (each JAX compilation 16-21 s), and the second call's 290 s gave the Hessian its
# 16-atom cell only and the many-materials stage no finished pass.
#
# Stages run in the order of what the issue's targets need first; each gets a share of the time left.
# JAX's persistent compilation cache is on (a fresh folder per run), so a program compiled by
# an earlier stage (the e3nn inference in the cuequivariance stage) is not compiled twice: compile
# times of later stages can be cache hits; the inference stage's are not.
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
#   GPU_SH_STAGES=a,b  only these stages (inference, cuequivariance, train-step, hessian,
#                      many-materials; default all): to split the run over two calls of one lease
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/results/gpu}"
SMOKE="${GPU_SH_SMOKE:-0}"
BUDGET="${GPU_SH_BUDGET:-480}"
ORDER=(inference cuequivariance train-step hessian many-materials)  # the stages, in the order they run
STAGES=",${GPU_SH_STAGES:-$(IFS=,; echo "${ORDER[*]}")},"
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
  # wheels of what the image already has are left out: its flax matches its jax (flax 0.12.8 carried
  # beside jax 0.11.2 broke cuequivariance-jax's import of flax.nnx on 2026-11-30)
  WHEELS=()
  for wheel in .whl/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1)
    case "$name" in
      jax|jaxlib|flax|optax|orbax_checkpoint|numpy|scipy|torch)
        if "$PYTHON" -c "import ${name%_checkpoint}" >/dev/null 2>&1; then say "  not installing $(basename "$wheel"): the image has $name"; continue; fi ;;
    esac
    WHEELS+=("$wheel")
  done
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${WHEELS[@]}" \
    >>"$LOG" 2>&1 || { echo "gpu.sh: error: installing .whl/ failed (see $LOG)" >&2; exit 2; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$(mktemp -d -t gpu-sh-jax-cache.XXXXXX)}"  # empty: this run only
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the GPU in the inference processes

DEVICE=$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
"$PYTHON" -c '
import platform, jax, torch
print(f"machine: {platform.node()}, {jax.devices()[0].device_kind} (jax {jax.__version__}, {jax.default_backend()}), "
      f"torch {torch.__version__}" + (f" on {torch.cuda.get_device_name()}" if torch.cuda.is_available() else " on CPU"))
from importlib.metadata import version
found = []
for name in ("jaxlib", "flax", "optax", "e3nn-jax", "e3nn", "mace-torch", "phonopy", "cuequivariance-jax", "cuequivariance-ops-jax-cu13"):
    try:
        found.append(f"{name} {version(name)}")
    except Exception:
        pass
print("versions: " + ", ".join(found))
' 2>&1 | tee -a "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$LOG"
say "mace-torch on $DEVICE; smoke=$SMOKE; budget ${BUDGET} s; results in $OUT"

if [ "$SMOKE" = 1 ]; then
  INFERENCE=(--sizes 64 --channels 16 --repeats 2)
  HESSIAN=(--structures Si16 --channels 16 --repeats 2 --repeat-seconds 5)
  TRAIN=(--channels 16 --steps 1 --batch-size 4)
  CUEQ=(--channels 16 --sizes 64 --hessian Si16 --repeats 2)
  MANY=(--count 3 --loop-count 2)
else
  INFERENCE=(--sizes 64 512 4096 --channels 128 --repeats 5)
  HESSIAN=(--structures Si16,Si64 --channels 128 --repeats 3 --repeat-seconds 20)
  TRAIN=(--channels 128 --warmup 10 --steps 10 --batch-size 4)  # mace-torch's first GPU steps are slow
  CUEQ=(--channels 128 --sizes 64 512 4096 --hessian Si16 Si64 --repeats 5)
  MANY=(--count 17 --loop-count 5)
fi

# stage NAME SHARE COMMAND...: run with a time limit of SHARE (per cent) of the budget left, all of
# it for the last stage selected (SECONDS counts from the script's start: the installation is inside)
selected() { [[ "$STAGES" == *",$1,"* ]]; }
stage() {
  local name=$1 share=$2; shift 2
  selected "$name" || return
  local later=0 seen=0 other
  for other in "${ORDER[@]}"; do
    [ "$seen" = 1 ] && selected "$other" && later=1
    [ "$other" = "$name" ] && seen=1
  done
  [ "$later" = 0 ] && share=100
  local left=$((BUDGET - SECONDS))
  local limit=$((left * share / 100))
  if [ "$limit" -lt 10 ]; then say "== $name: skipped, ${left} s of the budget left"; return; fi
  say "== $name (at most ${limit} s): $*"
  timeout --kill-after=5 "$limit" "$PYTHON" "$@" 2>&1 | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  [ "$status" = 0 ] || say "== $name: exit status $status$([ "$status" = 124 ] && echo ' (out of time; JSON holds what finished)')"
}

MEMORY=(--memory-gb 0)  # no address-space limit: CUDA reserves more virtual memory than any useful limit
stage inference 45 benchmarks/inference.py --models mace-mp0-medium --dtypes float32 --device "$DEVICE" \
  "${MEMORY[@]}" "${INFERENCE[@]}" --json "$OUT/inference.json"
if selected cuequivariance; then
  # cuequivariance-ops loads libnvrtc and cuBLAS by name: point the loader at the CUDA libraries of
  # the pip packages (nvidia-*) that jax and torch use, for this stage only
  NVLIB=$("$PYTHON" -c '
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
print(":".join(sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "**", "lib*.so*"), recursive=True)})))
' 2>/dev/null)
  SAVED_LD="${LD_LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH="$NVLIB${SAVED_LD:+:$SAVED_LD}"
  if "$PYTHON" -c 'import cuequivariance_jax' >>"$LOG" 2>&1; then
    stage cuequivariance 50 benchmarks/cueq.py "${CUEQ[@]}" --json "$OUT/cueq.json"
  else
    say "== cuequivariance: skipped, cuequivariance-jax not importable (the error is in the log above)"
  fi
  export LD_LIBRARY_PATH="$SAVED_LD"
fi
stage train-step 50 benchmarks/train_step.py --dtypes float32 --materials Si --device "$DEVICE" --timeout 300 \
  "${TRAIN[@]}" --save "$OUT/train_step.json"
stage hessian 50 benchmarks/hessian.py --methods jax-full,torch-hess --device "$DEVICE" --timeout 300 \
  "${HESSIAN[@]}" --save "$OUT/hessian.json"
SEVENNET="${GPU_SH_SEVENNET:-.gpu/sevennet0}"
if ! selected many-materials; then
  :
elif [ -f "$SEVENNET/config.json" ]; then
  MANY_OUT="${GPU_SH_MANY_OUT:-/tmp/phonons_many}"
  rm -rf "$MANY_OUT"
  stage many-materials 100 benchmarks/phonons_many.py --model sevennet-0 --model-dir "$SEVENNET" --sides batched,loop \
    "${MANY[@]}" --out "$MANY_OUT"
  cp "$MANY_OUT/results.json" "$OUT/many.json" 2>/dev/null && cp "$MANY_OUT/table.txt" "$OUT/many.txt" \
    || say "== many-materials: no report (see the log)"
else
  say "== many-materials: skipped, no converted SevenNet-0 at $SEVENNET"
fi
say "done in ${SECONDS} s"

#!/usr/bin/env bash
# The whole GPU matrix in one command, on a machine with a CUDA GPU, torch built for it and
# attnparity installed (docs/gpu.md):
#
#   bash scripts/gpu_run.sh --out DIR [extra pytest arguments]
#
# Steps, each a pytest run (or script) of its own, so that one that fails or hangs leaves the others:
#
#   op         op matrix on CUDA, every backend that runs here, fp32/fp16/bf16, one worker per GPU
#   perf       perf quick set (op shapes, pipeline images/s), fp16/bf16, on a quiet machine
#   dobench    attnparity's timer beside triton.testing.do_bench on the same shapes
#   golden     this GPU's goldens (reference attention) written into DIR/golden, never golden/
#   pipelines  every backend's pipelines against those goldens
#   merge      one results.json + index.html of op, perf and pipelines; summary.md
#
# Extra arguments go to every pytest step, last, so they win (e.g. --attn-backends='sdpa-*,flex'
# or -k bf16). The exit status is 0 when every step ran and the merged report exists, whatever the
# matrix found: DIR/summary.md and DIR/index.html say that.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DEST=""
DRY=0
STEP_TIMEOUT=0
EXTRA=()

usage() {
    cat <<EOF
usage: scripts/gpu_run.sh --out DIR [--step-timeout SECONDS] [--dry-run] [extra pytest arguments]

Runs attnparity's GPU matrix (op, perf, do_bench, goldens, pipelines) and writes into DIR:
index.html and results.json (the merged matrix), summary.md, run.log, dobench.json, golden/ (this
GPU's goldens) and steps/ (each step's own report). PYTHON (default python3) runs everything.

  --out DIR               where everything is written (required)
  --step-timeout SECONDS  stop a step after this long (SIGINT: pytest still writes what ran); 0: none
  --dry-run               print the commands, run nothing
  --help                  this text
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "gpu_run: --out needs a directory" >&2; exit 2; }; DEST=$2; shift ;;
        --out=*) DEST=${1#--out=} ;;
        --step-timeout) [ $# -ge 2 ] || { echo "gpu_run: --step-timeout needs seconds" >&2; exit 2; }; STEP_TIMEOUT=$2; shift ;;
        --dry-run) DRY=1 ;;
        --help|-h) usage; exit 0 ;;
        --) shift; EXTRA+=("$@"); break ;;
        *) EXTRA+=("$1") ;;
    esac
    shift
done
[ -n "$DEST" ] || { echo "gpu_run: --out DIR is required (see --help)" >&2; exit 2; }
case "$STEP_TIMEOUT" in ''|*[!0-9]*) echo "gpu_run: --step-timeout takes whole seconds, not '$STEP_TIMEOUT'" >&2; exit 2 ;; esac

if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_run: no CUDA device visible to $PY's torch; on a CPU machine run: pytest --attn-backends=all -n auto" >&2
    exit 3
fi

DEST=$(realpath -m "$DEST")
LOG="$DEST/run.log"
STEPS_MD="$DEST/steps.md"
if [ "$DRY" = 0 ]; then
    rm -rf "$DEST/steps" "$DEST/golden" "$DEST/work"
    mkdir -p "$DEST/steps" "$DEST/golden" "$DEST/work" || exit 2
    : >"$LOG"
    printf '| step | rc | seconds |\n|---|---|---|\n' >"$STEPS_MD"
    cd "$DEST/work" || exit 2
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
fi

# step NAME CMD...: runs CMD (output into run.log), or prints it with --dry-run
step() {
    local name=$1
    shift
    # past the limit, SIGINT: pytest still writes the report of what ran; SIGKILL 30 s later
    [ "$STEP_TIMEOUT" -gt 0 ] && set -- timeout -s INT -k 30 "$STEP_TIMEOUT" "$@"
    if [ "$DRY" = 1 ]; then
        printf '%s:' "$name"; printf ' %q' "$@"; printf '\n'
        return 0
    fi
    echo "gpu_run: step $name: $*" | tee -a "$LOG"
    local t0 rc
    t0=$(date +%s)
    "$@" >>"$LOG" 2>&1
    rc=$?
    echo "gpu_run: step $name: rc=$rc in $(($(date +%s) - t0)) s" | tee -a "$LOG"
    printf '| %s | %s | %s |\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STEPS_MD"
}

# attnparity's pytest from an empty directory (no project conftest, no addopts), derandomized
attn() {
    local name=$1
    shift
    step "$name" env CI=1 PYTHONUNBUFFERED=1 "$PY" -m pytest -q -p no:cacheprovider --rootdir="$DEST/work" \
        --attn-device=cuda --attn-artifacts="$DEST/steps/artifacts" --attn-timeout=120 "$@" \
        --attn-report="$DEST/steps/$name" "${EXTRA[@]}"
}

attn op --attn-backends=all --attn-dtypes=fp32,fp16,bf16 -m attn_op -n auto
attn perf --attn-backends=all --attn-dtypes=fp16,bf16 --attn-perf=quick -m attn_perf
step dobench "$PY" "$ROOT/scripts/gpu_bench.py" --device cuda --dtypes fp16,bf16 \
    --json "$DEST/dobench.json" --markdown "$DEST/steps/dobench.md"
attn golden --attn-backends=sdpa-math --attn-dtypes=fp16,bf16 -m attn_pipeline --attn-golden-update \
    --attn-golden-dir="$DEST/golden"
attn pipelines --attn-backends=all --attn-dtypes=fp16,bf16 -m attn_pipeline -n auto --attn-golden-dir="$DEST/golden"

runs=()
for r in op perf pipelines; do runs+=("$DEST/steps/$r/results.json"); done
if [ "$DRY" = 1 ]; then
    step merge "$PY" -m attnparity.cli merge "${runs[@]}" --report "$DEST"
    exit 0
fi
present=()
for r in "${runs[@]}"; do [ -f "$r" ] && present+=("$r"); done
if [ "${#present[@]}" -gt 0 ]; then
    step merge "$PY" -m attnparity.cli merge "${present[@]}" --report "$DEST"
else
    echo "gpu_run: no step wrote a results.json (run.log says why)" | tee -a "$LOG"
fi

{
    echo "# attnparity GPU run"
    echo
    cat "$STEPS_MD"
    echo
    [ -f "$DEST/steps/dobench.md" ] && cat "$DEST/steps/dobench.md" && echo
    [ -f "$DEST/results.json" ] && "$PY" -m attnparity.cli perf-table "$DEST/results.json" 2>&1
    echo
    echo "goldens: $(find "$DEST/golden" -name '*.png' | wc -l) images in $DEST/golden"
} >"$DEST/summary.md"
rm -rf "$DEST/work"
echo "gpu_run: done; report $DEST/index.html, summary $DEST/summary.md" | tee -a "$LOG"
[ -f "$DEST/results.json" ] && [ "${#present[@]}" = 3 ]

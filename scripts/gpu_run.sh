#!/usr/bin/env bash
# The whole GPU run in one command (docs/gpu.md): on a lent H200 (Python 3.12 image with torch+CUDA,
# triton, pytest, hypothesis, scikit-image; no diffusers / xformers / flash-attn) it installs what
# the image lacks from the wheels carried in .gpu-wheels/ (../shared/tools/gpu-wheels.sh), installs
# attnparity, and runs, each step under its own timeout so one hung step cannot eat the lease:
#
#   step      what                                                          budget (s)
#   install   pip: diffusers, sageattention, xformers (--no-deps), attnparity -e   60
#   op        op matrix on CUDA: every SDPA kernel, flex compiled, xformers
#             per op, sage, flash-attn where present; fp32/fp16/bf16             170
#   perf      perf quick set (op shapes + pipeline images/s), fp16/bf16          100
#   dobench   our timer beside triton.testing.do_bench on the quick shapes        45
#   golden    CUDA goldens (fp16, bf16) with --attn-golden-update, own dir        45
#   pipelines pipeline checks of every backend against those goldens             60
#   merge     one results.json + index.html of op, perf, pipelines (merge)        20
#                                                                      total     500 (< 9 min)
#
# A step past its budget gets SIGINT (pytest then still writes its report of what ran), SIGKILL 20 s
# later. A step never starts past TOTAL_BUDGET_S. What comes back ($OUT, at most 8 files, none
# deeper than 2 folders): results.json, index.html, summary.md, run.log, dobench.json,
# goldens.tar.gz.
#
# --dry-run runs the same path on CPU with tiny settings (two CPU backends, fp32, 2 examples, one
# shape, one pipeline; no install): tests/test_gpu_run.py runs it so this script cannot rot.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${GPU_RUN_WORK:-/tmp/attnparity-gpu}
OUT=${OUT:-$WORK/out}
TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-510}
DRY=0

usage() {
    cat <<EOF
usage: scripts/gpu_run.sh [--dry-run]

Runs attnparity's GPU matrix (op, perf, do_bench, goldens, pipelines) and writes results.json,
index.html, summary.md, run.log, dobench.json and goldens.tar.gz under \$OUT (now: $OUT).
Working files under GPU_RUN_WORK (now: $WORK). PYTHON (default python3) runs everything.

  --dry-run   the same steps on CPU with tiny settings, nothing installed (seconds, not minutes)
  --help      this text
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --help|-h) usage; exit 0 ;;
        *) echo "gpu_run: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    BACKENDS=sdpa-math,sdpa-flash
    DTYPES=fp32
    PIPE_DTYPES=fp32
    EXAMPLES=2
    OP_SELECT=(-k "forward and sdpa-math")
    PERF_SELECT=(-k "perf:sdxl-cross and not perf-pipeline")
    PIPE_SELECT=(-k "sd15")
    BENCH_ARGS=(--match sdxl-cross)
    # generous on a shared 2-core machine; the real budgets are below
    B_INSTALL=5 B_OP=120 B_PERF=120 B_BENCH=120 B_GOLDEN=120 B_PIPE=120 B_MERGE=60
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    DEVICE=cuda
    BACKENDS='sdpa-*,sdpa,naive,flex,flex-eager,xformers*,sage,flash-attn*,diffusers:native,diffusers:_native_cudnn,diffusers:_native_efficient,diffusers:flex'
    DTYPES=fp32,fp16,bf16
    PIPE_DTYPES=fp16,bf16
    EXAMPLES=10
    OP_SELECT=()
    PERF_SELECT=()
    PIPE_SELECT=()
    BENCH_ARGS=()
    B_INSTALL=60 B_OP=170 B_PERF=100 B_BENCH=45 B_GOLDEN=45 B_PIPE=60 B_MERGE=20
fi

rm -rf "$WORK/steps" "$WORK/golden-cuda" "$WORK/artifacts" "$WORK/pytest"
mkdir -p "$OUT" "$WORK/steps" "$WORK/golden-cuda" "$WORK/artifacts" "$WORK/pytest"
LOG="$OUT/run.log"
: >"$LOG"
STEPS="$WORK/steps/table.md"
printf '| step | rc | seconds | budget |\n|---|---|---|---|\n' >"$STEPS"
START=$(date +%s)

log() { echo "gpu_run: $*" | tee -a "$LOG"; }

# step NAME BUDGET CMD...: runs CMD under min(BUDGET, what is left of TOTAL_BUDGET_S), output into run.log
step() {
    local name=$1 budget=$2
    shift 2
    local left=$((TOTAL_BUDGET_S - ($(date +%s) - START)))
    if [ "$left" -lt 10 ]; then
        log "step $name: not started, ${TOTAL_BUDGET_S} s total budget spent"
        printf '| %s | not started | 0 | %s |\n' "$name" "$budget" >>"$STEPS"
        return 0
    fi
    [ "$budget" -gt "$left" ] && budget=$left
    log "step $name (budget ${budget} s): $*"
    local t0 rc
    t0=$(date +%s)
    # bash -c: timeout runs programs, and the steps are this script's functions (exported below)
    timeout -s INT -k 20 "$budget" bash -c '"$@"' step "$@" >>"$LOG" 2>&1
    rc=$?
    local took=$(($(date +%s) - t0))
    [ "$rc" = 124 ] && log "step $name: TIMED OUT after ${budget} s (its report holds what ran)"
    log "step $name: rc=$rc in ${took} s"
    printf '| %s | %s | %s | %s |\n' "$name" "$rc" "$took" "$budget" >>"$STEPS"
    return 0
}

# attnparity's pytest, from an empty directory (no project conftest, no addopts), CI-derandomized
attn() {
    (cd "$WORK/pytest" && CI=1 PYTHONUNBUFFERED=1 "$PY" -m pytest -q -p no:cacheprovider --rootdir="$WORK/pytest" \
        --attn-device="$DEVICE" --attn-artifacts="$WORK/artifacts" "$@")
}

export ROOT PY WORK OUT DEVICE
export -f attn

log "$( [ "$DRY" = 1 ] && echo 'DRY RUN on CPU, tiny settings' || echo 'GPU run' ); python $("$PY" -c 'import sys; print(sys.version.split()[0])'); load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv >>"$LOG" 2>&1

if [ "$DRY" = 1 ]; then
    step install "$B_INSTALL" echo "dry run: would pip install --no-index --find-links .gpu-wheels diffusers sageattention; xformers --no-deps; --no-deps --no-build-isolation -e ."
else
    install() {
        cd "$ROOT" || return 1
        if [ -d .gpu-wheels ]; then
            "$PY" -m pip install -q --no-index --find-links .gpu-wheels diffusers sageattention \
                || echo "gpu_run: diffusers/sageattention not installed (pipelines and sage rows will skip)"
            "$PY" -m pip install -q --no-index --no-deps --find-links .gpu-wheels xformers \
                || echo "gpu_run: xformers not installed (its rows will skip)"
        else
            echo "gpu_run: no .gpu-wheels/ carried (make it with ../shared/tools/gpu-wheels.sh, carry it)"
        fi
        "$PY" -m pip install -q --no-deps --no-build-isolation -e . && "$PY" -m pip list 2>/dev/null \
            | grep -iE '^(torch|triton|diffusers|transformers|xformers|sageattention|flash.attn|attnparity) '
    }
    export -f install
    step install "$B_INSTALL" install
fi

# 1. the op matrix (hypothesis + edge corpus, semantics, gradients), each cell bounded too
step op "$B_OP" attn --attn-backends="$BACKENDS" --attn-dtypes="$DTYPES" --attn-examples="$EXAMPLES" \
    --attn-timeout=60 -m attn_op "${OP_SELECT[@]}" --attn-report="$WORK/op"
# 2. perf quick set: op shapes and pipeline images/s
step perf "$B_PERF" attn --attn-backends="$BACKENDS" --attn-dtypes="$( [ "$DRY" = 1 ] && echo fp32 || echo fp16,bf16 )" \
    --attn-perf=quick -m attn_perf "${PERF_SELECT[@]}" --attn-report="$WORK/perf"
# 3. our timer beside triton's do_bench, same shapes
step dobench "$B_BENCH" "$PY" "$ROOT/scripts/gpu_bench.py" --device "$DEVICE" \
    --backends "$( [ "$DRY" = 1 ] && echo "$BACKENDS" || echo 'sdpa-math,sdpa-flash,sdpa-efficient,sdpa-cudnn,flex,xformers,xformers-flash3,sage,flash-attn2,flash-attn3' )" \
    --dtypes "$( [ "$DRY" = 1 ] && echo fp32 || echo fp16,bf16 )" --budget-s $((B_BENCH - 15)) "${BENCH_ARGS[@]}" \
    --json "$OUT/dobench.json" --markdown "$WORK/dobench.md"
# 4. the device's goldens (reference attention), into their own directory, never golden/
step golden "$B_GOLDEN" attn --attn-backends=sdpa-math --attn-dtypes="$PIPE_DTYPES" -m attn_pipeline "${PIPE_SELECT[@]}" \
    --attn-golden-update --attn-golden-dir="$WORK/golden-cuda" --attn-report="$WORK/golden"
# 5. every backend's pipelines against them (no update flag: the goldens must be found as written)
step pipelines "$B_PIPE" attn --attn-backends="$BACKENDS" --attn-dtypes="$PIPE_DTYPES" -m attn_pipeline "${PIPE_SELECT[@]}" \
    --attn-golden-dir="$WORK/golden-cuda" --attn-report="$WORK/pipelines"

# 6. one matrix of the runs that wrote a report, the goldens packed into one file
finish() {
    local runs=()
    for r in op perf pipelines; do [ -f "$WORK/$r/results.json" ] && runs+=("$WORK/$r/results.json"); done
    [ "${#runs[@]}" -gt 0 ] || { echo "gpu_run: no step wrote a results.json"; return 1; }
    "$PY" -m attnparity.cli merge "${runs[@]}" --report "$WORK/merged" || return 1
    cp "$WORK/merged/results.json" "$WORK/merged/index.html" "$OUT/"
    tar -czf "$OUT/goldens.tar.gz" -C "$WORK" golden-cuda
    "$PY" -m attnparity.cli perf-table "$OUT/results.json" >"$WORK/perf-table.md" 2>&1 || true
}
export -f finish
step merge "$B_MERGE" finish

{
    echo "# attnparity GPU run$( [ "$DRY" = 1 ] && echo ' (DRY RUN on CPU: proves the path, not the figures)')"
    echo
    echo "total $(($(date +%s) - START)) s of a ${TOTAL_BUDGET_S} s budget; load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    echo
    cat "$STEPS"
    echo
    [ -f "$WORK/dobench.md" ] && cat "$WORK/dobench.md" && echo
    [ -f "$WORK/perf-table.md" ] && cat "$WORK/perf-table.md"
    echo
    echo "goldens: $(tar -tzf "$OUT/goldens.tar.gz" 2>/dev/null | grep -c '\.png$') images in goldens.tar.gz"
} >"$OUT/summary.md"
log "done in $(($(date +%s) - START)) s; \$OUT: $(ls "$OUT" | tr '\n' ' ')"
# exit 0 when every step ran and the merged report exists, whatever the matrix found (run.log says)
[ -f "$OUT/results.json" ] && ! grep -q '| not started |' "$STEPS"

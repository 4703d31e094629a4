#!/usr/bin/env bash
# Reproduce docs/reports/upgrade-gate.md: gate two upgrades with attnparity, each environment in its own
# fresh venv.
#
#   torch pair:     torch 2.13.0(+cpu) -> 2.14.1, diffusers 0.42.1 in both
#   diffusers pair: diffusers 0.36.0 -> 0.42.1, torch 2.13.0(+cpu) in both
#
# Three environments, three full runs (the torch pair's "before" environment, torch 2.13.0 +
# diffusers 0.42.1, is also the diffusers pair's "after": the same versions, run once):
#
#   run A  torch 2.13.0 + diffusers 0.42.1   baseline, no --attn-compare
#   run B  torch 2.14.1 + diffusers 0.42.1   --attn-compare=A/results.json  (the torch gate)
#   run C  torch 2.13.0 + diffusers 0.36.0   baseline of the diffusers pair
#   then   attnparity compare A B            (torch pair, offline; the same rule as run B's gate)
#          attnparity compare C A            (diffusers pair, offline)
#
# A is never run with --attn-compare so that it stays a clean baseline: under --attn-compare a
# cell failing in the baseline too is written as xfail ("unchanged failure"), which would change
# what a later comparison against A sees.
#
# Each run is `CI=1 python -m pytest -p no:cacheprovider --attn-backends=all --attn-report=DIR`
# from an empty directory, timed with /usr/bin/time -v, machine load printed before and after.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENVS=${UPGRADE_GATE_VENVS:-$ROOT/.attnparity/upgrade}
WORK=${UPGRADE_GATE_WORK:-/tmp/attnparity-upgrade-gate}
PYTHON=${PYTHON:-python3}
TORCH_OLD=2.13.0 TORCH_NEW=2.14.1
DIFFUSERS_OLD=0.36.0 DIFFUSERS_NEW=0.42.1
# Pins for an environment, when one is needed (docs/reports/upgrade-gate.md says whether any was).
TRANSFORMERS_PIN_OLD_DIFFUSERS=${TRANSFORMERS_PIN_OLD_DIFFUSERS:-}
DRY=0 PAIRS="torch diffusers" REUSE=0 REUSE_RUNS=0

usage() {
    cat <<EOF
usage: scripts/upgrade_gate.sh [--dry-run] [--pair torch|diffusers|both] [--reuse-venvs] [--reuse-runs]

Gates torch $TORCH_OLD -> $TORCH_NEW (diffusers $DIFFUSERS_NEW) and diffusers $DIFFUSERS_OLD ->
$DIFFUSERS_NEW (torch $TORCH_OLD) with attnparity's full matrix, each environment in a fresh venv
under $VENVS (ignored by git), runs under $WORK.

  --dry-run       print the plan (venvs, installs, runs, comparisons) and exit; installs nothing
  --pair P        torch, diffusers or both (default both)
  --reuse-venvs   keep a venv that already exists instead of recreating it (not a fresh venv:
                  only for re-running the matrix)
  --reuse-runs    keep a run whose results.json exists (e.g. run A for --pair diffusers after
                  --pair torch) instead of running it again
  --help          this text

Environment: PYTHON (default python3), UPGRADE_GATE_VENVS, UPGRADE_GATE_WORK,
TRANSFORMERS_PIN_OLD_DIFFUSERS (a transformers spec for the diffusers $DIFFUSERS_OLD venv, empty:
none). Needs ~8 GB of disk for torch $TORCH_NEW (a CUDA build: ~550 MB wheel plus nvidia-* and
triton wheels; it runs on CPU). A full run takes 6-8 min on an idle 2-core machine, 2-3x that
when it is busy. Exit 0 when every step ran (whatever the gate found), 1 when a step failed.
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --pair) shift; case "${1:-}" in torch) PAIRS=torch ;; diffusers) PAIRS=diffusers ;; both) PAIRS="torch diffusers" ;;
                *) echo "upgrade_gate: --pair takes torch, diffusers or both, not '${1:-}'" >&2; exit 2 ;; esac ;;
        --reuse-venvs) REUSE=1 ;;
        --reuse-runs) REUSE_RUNS=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "upgrade_gate: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "upgrade_gate: FAILED: $*" >&2; exit 1; }
say() { echo "== $*"; }
run() {  # print, and execute unless --dry-run
    echo "+ $*"
    [ "$DRY" = 1 ] || "$@"
}

venv_name() { echo "torch$1-diffusers$2"; }

make_venv() {  # torch diffusers [extra pip specs...]
    local torchv=$1 diffv=$2; shift 2
    local name; name=$(venv_name "$torchv" "$diffv")
    local v=$VENVS/$name
    say "venv $name"
    if [ "$REUSE" = 1 ] && [ -x "$v/bin/python" ]; then
        echo "   reusing $v (--reuse-venvs)"
    else
        run rm -rf "$v"
        run "$PYTHON" -m venv "$v" || die "python -m venv $v"
        run "$v/bin/pip" install -q "torch==$torchv" || die "pip install torch==$torchv"
        run "$v/bin/pip" install -q -e "$ROOT[all]" || die "pip install -e $ROOT[all]"
        run "$v/bin/pip" install -q "diffusers==$diffv" "$@" || die "pip install diffusers==$diffv $*"
    fi
    [ "$DRY" = 1 ] && return 0
    # pip must not have swapped torch for another build while installing the rest
    local got
    got=$("$v/bin/python" -c "import torch, diffusers, transformers, hypothesis; print(torch.__version__, diffusers.__version__, transformers.__version__, hypothesis.__version__)") \
        || die "$name: importing torch/diffusers/transformers/hypothesis failed"
    echo "   torch diffusers transformers hypothesis: $got"
    set -- $got
    case "$1" in "$torchv"|"$torchv"+*) ;; *) die "$name: pip installed torch $1, not $torchv" ;; esac
    [ "$2" = "$diffv" ] || die "$name: pip installed diffusers $2, not $diffv"
}

matrix() {  # run-name torch diffusers [baseline results.json]
    local rname=$1 torchv=$2 diffv=$3 baseline=${4:-}
    local v=$VENVS/$(venv_name "$torchv" "$diffv") dir=$WORK/run-$1
    local args=(-m pytest -p no:cacheprovider --attn-backends=all "--attn-report=$dir/report")
    [ -n "$baseline" ] && args+=("--attn-compare=$baseline")
    say "run $rname: torch $torchv, diffusers $diffv${baseline:+, against $baseline}"
    if [ "$REUSE_RUNS" = 1 ] && [ -s "$dir/report/results.json" ]; then
        echo "   reusing $dir/report/results.json (--reuse-runs)"; return 0
    fi
    run rm -rf "$dir"
    run mkdir -p "$dir/cwd"   # an empty directory: no conftest, no ini, no tests/ of this repo
    echo "+ (cd $dir/cwd && CI=1 /usr/bin/time -v $v/bin/python ${args[*]})"
    [ "$DRY" = 1 ] && return 0
    echo "   load at start: $(cat /proc/loadavg)   $(date -u +%FT%TZ)"
    local rc=0
    (cd "$dir/cwd" && CI=1 /usr/bin/time -v -o "$dir/time.txt" "$v/bin/python" "${args[@]}") >"$dir/pytest.log" 2>&1 || rc=$?
    echo "   load at end:   $(cat /proc/loadavg)   $(date -u +%FT%TZ)"
    echo "   exit $rc; wall $(grep 'Elapsed (wall clock)' "$dir/time.txt" | sed 's/.*): //'); log $dir/pytest.log"
    # 0: all passed or known; 1: failures, or the gate found something worse. Anything else
    # (2 interrupted, 3 internal error, 4 usage) means the run itself did not happen.
    [ "$rc" -le 1 ] || { tail -30 "$dir/pytest.log" >&2; die "run $rname exited $rc"; }
    [ -s "$dir/report/results.json" ] || die "run $rname wrote no $dir/report/results.json"
    # the gate's own lines, and pytest's summary line
    sed -n '/^compared [0-9]* cells with/,/^[^ ]/p' "$dir/pytest.log" | sed '$d' || true
    tail -1 "$dir/pytest.log"
}

compare() {  # old-run new-run torch diffusers(of the venv to use)
    local v=$VENVS/$(venv_name "$3" "$4")
    local old=$WORK/run-$1/report/results.json new=$WORK/run-$2/report/results.json
    say "attnparity compare run $1 -> run $2"
    echo "+ $v/bin/attnparity compare $old $new"
    [ "$DRY" = 1 ] && return 0
    local rc=0
    "$v/bin/attnparity" compare "$old" "$new" | tee "$WORK/compare-$1-$2.txt" || rc=$?
    [ "$rc" -le 1 ] || die "attnparity compare exited $rc"
}

[ "$DRY" = 1 ] && say "dry run: nothing is installed or run"
[ "$DRY" = 1 ] || mkdir -p "$WORK" "$VENVS"
say "repo $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')), $(nproc) cores"

make_venv "$TORCH_OLD" "$DIFFUSERS_NEW"
matrix A "$TORCH_OLD" "$DIFFUSERS_NEW"
case " $PAIRS " in *" torch "*)
    make_venv "$TORCH_NEW" "$DIFFUSERS_NEW"
    matrix B "$TORCH_NEW" "$DIFFUSERS_NEW" "$WORK/run-A/report/results.json"
    compare A B "$TORCH_OLD" "$DIFFUSERS_NEW" ;;
esac
case " $PAIRS " in *" diffusers "*)
    pin=()
    [ -n "$TRANSFORMERS_PIN_OLD_DIFFUSERS" ] && pin=("transformers$TRANSFORMERS_PIN_OLD_DIFFUSERS")
    make_venv "$TORCH_OLD" "$DIFFUSERS_OLD" "${pin[@]}"
    matrix C "$TORCH_OLD" "$DIFFUSERS_OLD"
    compare C A "$TORCH_OLD" "$DIFFUSERS_NEW" ;;
esac
say "done: runs and logs under $WORK"

#!/usr/bin/env bash
# The CUDA path of Overture's MusicGen serving, measured on one GPU machine in under 10 minutes.
#
#   benchmarks/gpu.sh [--cpu-check] [--only PART,...]     run (from any directory)
#   benchmarks/gpu.sh --wheels                             fetch missing packages from PyPI (see below)
#
# Parts, in this order, each under its own timeout and all under one deadline (GPU_BUDGET_S, 560 s):
#   parity          benchmarks/gpu_parity.py: greedy codes of tiny checkpoints, CUDA bfloat16 (and
#                   float16, float32) against CPU float32: the share of codes that agree
#   batching-small  benchmarks/batching.py --shape small --device cuda: continuous batching against
#                   plain generate, random weights of musicgen-small's shape; (c) with the clients
#                   polling every 0.5 s and then every 0.1 s
#   stereo-large    benchmarks/batching.py --shape stereo-large --no-plain --alone: one 30 s
#                   prediction alone, then 16 concurrent, through the HTTP server (polling 0.5 s)
#   batching-large  benchmarks/batching.py --shape large --device cuda, 2 s clips (polling 0.5 s)
# The server runs the model in its worker process (overture serve's default, --workers process).
# Every part prints what it compares and the machine line (benchmarks/_machine.py). Output goes to
# the terminal and to $OUT (default ./gpu-results): gpu.log (all of it), PART.log for each part,
# gpu-usage.csv (nvidia-smi every 0.5 s: time, MiB used, MiB total, % busy). Weights and scratch
# go to GPU_WORK (default /tmp/overture-gpu), not to $OUT.
#
# --cpu-check: every part on the smoke shapes on the CPU, briefly, to check the script and the
# scripts it runs without a GPU; the CUDA comparisons say they were skipped.
#
# Python: $PYTHON, else .venv/bin/python, else python3; in a GPU run, the first whose torch sees a
# CUDA device. Overture's own packages (fastapi, uvicorn, ...) that it lacks are installed,
# without network, from the wheels in GPU_WHEELS (default .whl) if there are any; `--wheels`
# downloads them there from PyPI, on a machine that reaches it (the GPU machine need not).
set -u -o pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu-results}
WORK=${GPU_WORK:-/tmp/overture-gpu}
WHEELS=${GPU_WHEELS:-.whl}
CPU_CHECK=0
ONLY=""
ALL_PARTS="parity batching-small stereo-large batching-large"

# Overture's runtime packages (and the benchmark's replicate client) that the GPU machines' image
# lacks, by its package list of 2026-11-17 (torch, transformers, numpy, scipy, httpx are there).
WHEEL_PACKAGES="fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection typing-extensions
opentelemetry-api importlib-metadata sqlalchemy python-multipart standardwebhooks sse-starlette soundfile cffi
pycparser pyloudnorm replicate"
# Import names that the server and the benchmarks need.
MODULES="torch transformers safetensors numpy scipy fastapi starlette uvicorn pydantic sqlalchemy multipart
standardwebhooks sse_starlette soundfile pyloudnorm httpx typer rich replicate"

say() { printf '%s\n' "$*"; }

pick_python() {
    # The first interpreter that imports torch (in a GPU run: whose torch sees a CUDA device).
    local candidate check
    check='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)'
    [ "$CPU_CHECK" = 1 ] && check='import torch'
    for candidate in ${PYTHON:-} .venv/bin/python python3; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c "$check" 2>/dev/null; then
            PY=$candidate
            return 0
        fi
        say "python: $candidate: $("$candidate" -c 'import torch; print("torch", torch.__version__, "sees no CUDA device")' 2>&1 | tail -1)"
    done
    return 1
}

missing_modules() {
    "$PY" -c 'import importlib.util, sys; print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' $MODULES
}

if [ "${1:-}" = --wheels ]; then
    PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
    # The versions this checkout runs here, as wheels for the GPU image's Python (3.12, x86-64).
    specs=$("$PY" -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' $WHEEL_PACKAGES) || exit 1
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2086
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" $specs
fi

while [ $# -gt 0 ]; do
    case $1 in
        --cpu-check) CPU_CHECK=1 ;;
        --only) ONLY=${2//,/ }; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
        *) say "unknown argument: $1 (see --help)"; exit 2 ;;
    esac
    shift
done
for part in $ONLY; do
    case " $ALL_PARTS " in *" $part "*) ;; *) say "unknown part: $part (parts: $ALL_PARTS)"; exit 2 ;; esac
done

mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1
# Absolute: the server and its worker processes import this checkout's src too.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ "$CPU_CHECK" = 1 ]; then
    BUDGET=${GPU_BUDGET_S:-900}
    # Kernel timings stream 1 MiB instead of 64: on smoke shapes this saves minutes, changes no path.
    export OVERTURE_KERNEL_SAMPLE_MIB=${OVERTURE_KERNEL_SAMPLE_MIB:-1}
    say "== gpu.sh --cpu-check: every part on smoke shapes on the CPU; timings mean nothing"
else
    BUDGET=${GPU_BUDGET_S:-560}
    say "== gpu.sh: the CUDA path, random weights of the real shapes"
fi
DEADLINE=$(( $(date +%s) + BUDGET ))
say "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M UTC'), budget ${BUDGET} s"

if ! pick_python; then
    say "no Python with torch$([ "$CPU_CHECK" = 1 ] || echo ' that sees a CUDA device') (tried: ${PYTHON:-} .venv/bin/python python3)."
    say "What to do: on the GPU machine, use its python3 (its torch is a CUDA build) or set PYTHON=/path/to/python"
    say "of a venv with a CUDA build of torch; a .venv made on a CPU-only machine holds a CPU build of torch."
    exit 2
fi
missing=$(missing_modules)
if [ -n "$missing" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    say "python $PY lacks: $missing; installing the wheels in $WHEELS (no network) into $WORK/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl \
        || say "pip install from $WHEELS failed"
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
    missing=$(missing_modules)
fi
if [ -n "$missing" ]; then
    say "python $PY lacks: $missing"
    say "What to do: on a machine that reaches PyPI, in this checkout, run \`benchmarks/gpu.sh --wheels\`"
    say "(it saves the wheels of Overture's packages that the GPU image lacks in $WHEELS, about 10 MB),"
    say "bring $WHEELS along (device tool: carry [\"$WHEELS\"]), and run this again; or set PYTHON to an"
    say "interpreter that has them and a CUDA build of torch."
    exit 2
fi
say "python: $PY, $("$PY" -c 'import sys, torch, transformers; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")')"

SAMPLER=""
if [ "$CPU_CHECK" = 0 ] && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'
    : >"$OUT/gpu-usage.csv"
    (
        while :; do
            usage=$(nvidia-smi --query-gpu=memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits)
            printf '%s, %s\n' "$(date +%s.%N)" "$usage"
            sleep 0.5
        done
    ) >>"$OUT/gpu-usage.csv" 2>/dev/null &
    SAMPLER=$!
    trap 'kill "$SAMPLER" 2>/dev/null' EXIT
elif [ "$CPU_CHECK" = 0 ]; then
    say "no nvidia-smi: GPU memory and utilization not recorded"
fi

usage_between() {  # peak MiB used and mean % busy in [start, end], from the sampler's file
    [ -n "$SAMPLER" ] || { echo "not sampled"; return; }
    awk -F, -v a="$1" -v b="$2" '$1 >= a && $1 <= b { n++; util += $4; if ($2 > peak) peak = $2; total = $3 }
        END { if (n) printf "GPU memory used at most %d of %d MiB, busy %.0f %% on average (%d samples)", peak, total, util / n, n;
              else printf "no GPU samples" }' "$OUT/gpu-usage.csv"
}

SUMMARY=""
FAILED=0
run_part() {  # name, most seconds, what it compares, command...
    local name=$1 most=$2 what=$3
    shift 3
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then
        return
    fi
    local left=$(( DEADLINE - $(date +%s) ))
    if [ "$left" -lt 30 ]; then
        say "== $name: skipped, ${left} s left of the ${BUDGET} s budget"
        SUMMARY+="$(printf '%-15s skipped (budget spent)' "$name")"$'\n'
        return
    fi
    local limit=$(( most < left ? most : left ))
    say ""
    say "== $name: $what"
    say "== $* (timeout ${limit} s)"
    local start end rc status
    start=$(date +%s.%N)
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    end=$(date +%s.%N)
    case $rc in
        0) status="ok" ;;
        124|137) status="TIMED OUT after ${limit} s (what it printed is above)" ;;
        *) status="FAILED, exit status $rc" ;;
    esac
    local line
    [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
    line="$(printf '%-15s %s, %s s; %s' "$name" "$status" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')" \
        "$(usage_between "$start" "$end")")"
    say "== $line"
    SUMMARY+="$line"$'\n'
}

if [ "$CPU_CHECK" = 1 ]; then
    skipped="no CUDA device: skipped"
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' && skipped="--cpu-check: skipped"
    say "$skipped the batching benchmark on CUDA (musicgen-small and musicgen-large shapes): smoke shapes on the CPU instead"
    say "$skipped the 30 s stereo-large prediction on CUDA, alone and 16 concurrent: 2 s, 2 concurrent, stereo smoke shape on the CPU"
    say "$skipped GPU memory and utilization sampling"
    run_part parity 300 "greedy codes, cpu bfloat16 against cpu float32 (CUDA sides skipped), tiny checkpoints" \
        "$PY" benchmarks/gpu_parity.py --frames 20 --prompts 2
    run_part batching-small 300 "continuous batching against plain generate; smoke shape standing in for small" \
        "$PY" benchmarks/batching.py --shape smoke --device cpu --dir "$WORK/smoke" --requests 2 --seconds 1 \
        --staggered 2 --interval 0.5 --longest 1 --gets 5
    run_part stereo-large 300 "one prediction alone, then concurrent ones; stereo smoke shape standing in for stereo-large" \
        "$PY" benchmarks/batching.py --shape stereo-smoke --device cpu --dir "$WORK/stereo-smoke" --no-plain --alone \
        --requests 2 --seconds 2 --staggered 0 --gets 0 --poll 0.5
    run_part batching-large 300 "continuous batching against plain generate; smoke shape standing in for large" \
        "$PY" benchmarks/batching.py --shape smoke --device cpu --dir "$WORK/smoke" --requests 2 --seconds 1 \
        --staggered 0 --gets 0 --poll 0.5
else
    run_part parity 90 "greedy codes, cuda bfloat16, float16 and float32 against cpu float32, tiny checkpoints" \
        "$PY" benchmarks/gpu_parity.py
    run_part batching-small 210 "continuous batching against plain generate on CUDA, musicgen-small shape" \
        "$PY" benchmarks/batching.py --shape small --device cuda --dir "$WORK/small" --gets 200
    run_part stereo-large 210 "a 30 s stereo-large prediction alone, then 16 concurrent, through the server on CUDA" \
        "$PY" benchmarks/batching.py --shape stereo-large --device cuda --dir "$WORK/stereo-large" --no-plain --alone \
        --requests 16 --seconds 30 --staggered 0 --gets 0 --poll 0.5
    run_part batching-large 180 "continuous batching against plain generate on CUDA, musicgen-large shape, 2 s clips" \
        "$PY" benchmarks/batching.py --shape large --device cuda --dir "$WORK/large" --seconds 2 --staggered 0 --gets 0 --poll 0.5
fi

say ""
say "== summary ($(date -u '+%H:%M UTC'), results in $OUT)"
printf '%s' "$SUMMARY"
[ "$FAILED" = 0 ]

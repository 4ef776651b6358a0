#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, as one script for a short device lease.
#
#   bash bench/gpu_session.sh core      # environment, speed vs HF eager (online, clip), bf16 fidelity
#   bash bench/gpu_session.sh extra     # HF torch.compile rows, batch mode + base preset, levers
#
# Results go to $OUT (default gpu_out/): log.txt, env.txt and one JSON per step. Every step has
# its own time limit, so a slow step costs only its own rows. Runs from the repository root with the
# machine's own python (jax[cuda], torch, transformers); nothing is installed.
# SIZE, PRESETS_TARGET (the presets with H100 targets) and PRESETS_ALL scale it down for a dry run on CPU.
set -u
OUT=${OUT:-gpu_out}
SIZE=${SIZE:-640}
PRESETS_TARGET=${PRESETS_TARGET:-large,small}
PRESETS_ALL=${PRESETS_ALL:-small,base,large}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/videomt_jax_cache}
LOG="$OUT/log.txt"
COMMON=(--size "$SIZE" --frames 8 --dtype bfloat16 --warmup 2)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log output and exit status
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    echo "=== $name rc=$? $(date -u +%T)" | tee -a "$LOG"
}

BENCH=("$PY" bench/run_bench.py "${COMMON[@]}")

core() {
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
        "$PY" -c "import jax, jaxlib, flax, torch, transformers; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__); print(jax.devices())"
    } >"$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
    step speed-vs-eager 240 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,clip --iters 20 --no-compile --json "$OUT/speed_eager.json"
    step fidelity 90 "$PY" -m videomt_jax.bench.fidelity --size "$SIZE" --frames 2 --json "$OUT/fidelity.json"
}

extra() {
    step speed-vs-compile 200 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,clip --iters 10 --compile --json "$OUT/speed_compile.json"
    step batch-and-base 120 "${BENCH[@]}" --presets "$PRESETS_ALL" --modes batch --batch 4 --iters 5 --no-compile --json "$OUT/speed_batch.json"
    step base-online-clip 60 "${BENCH[@]}" --presets base --modes online,clip --iters 10 --no-compile --json "$OUT/speed_base.json"
    # Levers, videomt-jax only: XLA attention instead of cuDNN; scanned layers; cuBLAS-only GEMMs.
    step lever-xla-attention 60 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,clip --iters 10 --no-hf --attention-impl xla --json "$OUT/lever_xla_attention.json"
    step lever-scan-layers 60 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,clip --iters 10 --no-hf --scan-layers --json "$OUT/lever_scan_layers.json"
    XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" \
        step lever-no-triton-gemm 60 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,clip --iters 10 --no-hf --json "$OUT/lever_no_triton_gemm.json"
}

case "${1:-core}" in
    core) core ;;
    extra) extra ;;
    *) echo "usage: $0 core|extra" >&2; exit 2 ;;
esac
grep -E "^\[|fps|error|Error" "$LOG" | tail -n 60

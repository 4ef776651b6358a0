#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, as one script for a short device lease.
#
#   bash bench/gpu_session.sh core      # environment, speed vs HF eager (online, clip), bf16 fidelity
#   bash bench/gpu_session.sh extra     # online probe under XLA runtime flags, HF torch.compile rows,
#                                       # bf16 fidelity, the XLA-attention lever, batch mode + base preset
#   bash bench/gpu_session.sh train     # docs/training.md: train-step memory (GPU compile) and time,
#                                       # ViT-S / ViT-L YouTube-VIS recipes, full remat, 1 and 8 clips
#
# Results go to $OUT (default gpu_out/): log.txt, env.txt and one JSON per step. Every step has
# its own time limit, cut to what is left of DEADLINE seconds (default 570) from the start, so a
# slow step costs only its own rows. Runs from the repository root with the machine's own python
# (jax[cuda], torch, transformers); nothing is installed.
# SIZE, PRESETS_TARGET (the presets with H100 targets) and PRESETS_ALL scale it down for a dry run on CPU.
set -u
OUT=${OUT:-gpu_out}
SIZE=${SIZE:-640}
PRESETS_TARGET=${PRESETS_TARGET:-large,small}
PRESETS_ALL=${PRESETS_ALL:-small,base,large}
PROBE_PRESETS=${PROBE_PRESETS:-small large}
PY=${PY:-python3}
DEADLINE=$((SECONDS + ${DEADLINE:-570}))
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$PWD/bench:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/videomt_jax_cache}
LOG="$OUT/log.txt"
COMMON=(--size "$SIZE" --frames 8 --dtype bfloat16 --warmup 2)
BENCH=("$PY" bench/run_bench.py "${COMMON[@]}")
# XLA runtime variants for the online probe: CUDA graphs (command buffers) off, and on for every op kind.
CMDBUF_OFF="--xla_gpu_enable_command_buffer="
CMDBUF_ALL="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN --xla_gpu_graph_min_graph_size=1"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log output and exit status
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        echo "=== $name skipped: deadline" | tee -a "$LOG"
        return
    fi
    echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    echo "=== $name rc=$? $(date -u +%T)" | tee -a "$LOG"
}

environment() {
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
        "$PY" -c "import jax, jaxlib, flax, torch, transformers; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__); print(jax.devices())"
    } >"$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
}

core() {
    environment
    step speed-vs-eager 240 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,clip --iters 20 --no-compile --json "$OUT/speed_eager.json"
    step fidelity 150 "$PY" -m videomt_bench.fidelity --size "$SIZE" --frames 2 --json "$OUT/fidelity.json"
}

probe() {  # probe PRESET [XLA flags...]
    local preset=$1
    shift
    XLA_FLAGS="$*" step "probe-$preset${*:+ $*}" 45 "$PY" bench/online_probe.py --preset "$preset" --size "$SIZE" --json "$OUT/online_probe.jsonl" ${TRACE:+--trace "$TRACE"}
}

extra() {
    environment
    for preset in $PROBE_PRESETS; do TRACE=/tmp/trace_$preset probe "$preset"; done
    tar czf "$OUT/traces.tar.gz" -C /tmp $(cd /tmp && ls -d trace_* 2>/dev/null) || true
    probe small "$CMDBUF_OFF"
    probe small "$CMDBUF_ALL"
    step speed-vs-compile 220 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,online_sync,clip --iters 10 --compile --json "$OUT/speed_compile.json"
    step fidelity 120 "$PY" -m videomt_bench.fidelity --size "$SIZE" --frames 2 --json "$OUT/fidelity.json"
    step lever-xla-attention 60 "${BENCH[@]}" --presets "$PRESETS_TARGET" --modes online,clip --iters 10 --no-hf --attention-impl xla --json "$OUT/lever_xla_attention.json"
    step batch-and-base 90 "${BENCH[@]}" --presets "$PRESETS_ALL" --modes online,clip,batch --batch 4 --iters 5 --no-compile --json "$OUT/speed_batch.json"
}

train() {
    environment
    step train-memory 150 "$PY" -m videomt_jax.training.memory ytvis19-vits ytvis19-vitl --remat none full --clips 1
    step train-step-vits 120 "$PY" bench/train_step.py ytvis19-vits --clips 1 8 --remat full
    step train-step-vitl 200 "$PY" bench/train_step.py ytvis19-vitl --clips 1 8 --remat full dots_no_batch
}

case "${1:-core}" in
    core) core ;;
    extra) extra ;;
    train) train ;;
    *) echo "usage: $0 core|extra|train" >&2; exit 2 ;;
esac
grep -E "^\[|fps|error|Error|^\{" "$LOG" | tail -n 60

#!/usr/bin/env bash
# One call on a GPU machine: every owed GPU number, in priority order, into $OUT (docs/gpu.md).
#
#   OUT=gpu_out bash scripts/gpu_check.sh              # part 1: what matters most, < 9 minutes wall
#   OUT=gpu_out bash scripts/gpu_check.sh --part 2     # part 2: what part 1 leaves (a second GPU window)
#   bash scripts/gpu_check.sh --cpu-smoke              # no GPU: the same plumbing, each step in its --cpu-smoke form
#
# Options: --part 1|2, --cpu-smoke, --budget SECONDS (wall time of the whole run, default 540).
# Environment: OUT (default gpu_out), PYTHON (default python3), GPU_CHECK_BUDGET_<step>=SECONDS overrides one step's
# budget (tests use it to make a step time out), D4RT_COMMIT (the commit, when .git did not travel; else the file
# GPU_COMMIT at the repository root, written before the tree is copied: `git rev-parse HEAD > GPU_COMMIT`).
#
# Runs offline, on the machine as it is: installs the package from the tree if it does not import
# (pip --no-index --no-deps --no-build-isolation -e .), records a preflight (nvidia-smi, versions, commit), then runs
# each step under `timeout` with its own budget; a step whose budget exceeds the time left is skipped. Every step's
# rc, seconds and status go to the steps table (steps.md). Correctness tests and the training run overlap (neither
# is timed); timed benchmarks run alone. Everything is written to a work folder and packed after every step into
# $OUT/gpu_check.tar.gz, so $OUT holds three files (steps.md, summary.txt, gpu_check.tar.gz) even if the run is killed.
set -u
main() {  # (one function, so bash reads the whole script before running it: editing the file mid-run changes nothing)
cd "$(dirname "$0")/.."

PART=1
SMOKE=0
BUDGET=540
while [ $# -gt 0 ]; do
    case "$1" in
        --part) PART="$2"; shift 2 ;;
        --cpu-smoke) SMOKE=1; shift ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$PART" in 1|2) ;; *) echo "gpu_check.sh: --part must be 1 or 2, got $PART" >&2; exit 2 ;; esac
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be whole seconds, got $BUDGET" >&2; exit 2 ;; esac

START=$(date +%s)
DEADLINE=$((START + BUDGET))
OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs" "$WORK/results"
STEPS="$WORK/steps.tsv"
printf 'step\tbudget_s\trc\tseconds\tstatus\n' > "$STEPS"
export PYTHONUNBUFFERED=1 D4RT_COMMIT

# ----- plumbing -----------------------------------------------------------------------------------------------------
pack() {  # the work folder into $OUT (atomically: a kill mid-pack leaves the previous archive)
    steps_md > "$OUT/steps.md.tmp" && mv "$OUT/steps.md.tmp" "$OUT/steps.md"
    tar -czf "$OUT/gpu_check.tar.gz.tmp" -C "$WORK" --exclude='*.safetensors' --exclude='*.ckpt' \
        --exclude='*.npz' --exclude='*.onnx*' --exclude='cpp-bench' . 2>/dev/null && mv "$OUT/gpu_check.tar.gz.tmp" "$OUT/gpu_check.tar.gz"
}

steps_md() {
    echo "# gpu_check.sh part $PART$( [ $SMOKE = 1 ] && echo ' (--cpu-smoke)'), budget ${BUDGET}s, commit ${D4RT_COMMIT:-unknown}"
    echo
    echo "| step | budget s | rc | seconds | status |"
    echo "|---|---|---|---|---|"
    tail -n +2 "$STEPS" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }'
}

left() { echo $((DEADLINE - $(date +%s))); }

record() {  # NAME BUDGET RC SECONDS STATUS  (one line: concurrent steps append whole lines)
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STEPS"
}

step() {  # NAME BUDGET COMMAND: run COMMAND (a bash string) under `timeout BUDGET`, or skip it if time is short
    local name=$1 budget=$2 cmd=$3 override rc t0 t1 secs status
    override="GPU_CHECK_BUDGET_${name}"
    budget=${!override:-$budget}
    if [ "$(left)" -lt "$budget" ]; then
        record "$name" "$budget" "-" 0 "skipped: $(left) s left < budget"
        echo "[gpu_check] skip $name ($(left) s left < ${budget} s)"
        pack
        return 0
    fi
    echo "[gpu_check] $name (budget ${budget} s, $(left) s left)"
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$budget" bash -c "$cmd" > "$WORK/logs/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
        0) status=ok ;;
        124|137) status="timeout (killed after ${budget} s)" ;;
        *) status="failed (see logs/$name.log)" ;;
    esac
    record "$name" "$budget" "$rc" "$secs" "$status"
    echo "[gpu_check] $name: $status, ${secs} s"
    pack
}

# ----- preflight ----------------------------------------------------------------------------------------------------
if [ -z "${D4RT_COMMIT:-}" ]; then
    if git rev-parse HEAD >/dev/null 2>&1; then
        D4RT_COMMIT=$(git rev-parse HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo "+dirty")
    elif [ -f GPU_COMMIT ]; then
        D4RT_COMMIT=$(head -n 1 GPU_COMMIT)
    else
        D4RT_COMMIT=unknown
    fi
fi
echo "$D4RT_COMMIT" > "$WORK/commit.txt"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname), $(nproc) CPU cores, part $PART, cpu-smoke $SMOKE, budget ${BUDGET} s"
    echo "commit: $D4RT_COMMIT"
    echo "python: $($PY --version 2>&1) ($(command -v "$PY"))"
} > "$WORK/preflight.txt"
(nvidia-smi || echo "nvidia-smi: not found or failed") > "$WORK/nvidia-smi.txt" 2>&1

versions() {  # library versions (from their metadata: importing lightning or onnx costs seconds), and the GPU
    "$PY" - <<'EOF'
import importlib.metadata as md, platform
print("python", platform.python_version())
for name in ("numpy", "torch", "triton", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "lightning",
             "safetensors", "setuptools", "tensorrt", "cuda-python", "d4rt"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
import d4rt.cli, d4rt.kernels, d4rt.models  # noqa: F401  (the import check)
import torch
print("cuda available", torch.cuda.is_available(), "| torch.version.cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs", p.total_memory // 2**30, "GiB")
EOF
}
if ! versions > "$WORK/versions.txt" 2>&1; then
    echo "[gpu_check] d4rt does not import; installing it from the tree (offline)"
    "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . > "$WORK/logs/install.log" 2>&1
    versions > "$WORK/versions.txt" 2>&1 \
        || { echo "[gpu_check] d4rt still does not import: see logs/install.log and versions.txt"; pack; exit 3; }
fi
cat "$WORK/preflight.txt" "$WORK/versions.txt"
if [ $SMOKE = 0 ] && ! grep -q "cuda available True" "$WORK/versions.txt"; then
    echo "[gpu_check] no CUDA GPU visible to torch: nothing to run (use --cpu-smoke for a dry run)" | tee -a "$WORK/preflight.txt"
    pack
    exit 3
fi
record preflight - 0 $(( $(date +%s) - START )) ok
pack

# ----- the steps ----------------------------------------------------------------------------------------------------
R="$WORK/results"
D4RT="$PY -m d4rt.cli"
if [ $SMOKE = 1 ]; then  # the GPU steps in their --cpu-smoke forms: same plumbing, tiny work, the interpreter
    GPU_TESTS="TRITON_INTERPRET=1 $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py -k 'split_plan or pruning or head_dim_chunks or (cross_attention_matches and D64)' --junitxml=$WORK/logs/kernel_tests.xml"
    TRAIN="$D4RT train --synthetic 4 --preset tiny --image-size 64 --num-frames 4 --num-queries 64 --max-steps 2 --max-minutes 1 --accelerator cpu --output-dir $WORK/train"
    EVAL_CLIPS=4
    ATTENTION="$PY benchmarks/attention.py --cpu-smoke --out $R"
    ATTENTION_BWD="$PY benchmarks/attention.py --cpu-smoke --backward --out $R"
    E2E_G="$PY benchmarks/end_to_end.py --cpu-smoke --out $R"
    E2E_REST="$PY benchmarks/end_to_end.py --cpu-smoke --name end-to-end-more --out $R"
    E2E_COMPILE="$PY benchmarks/end_to_end.py --cpu-smoke --name end-to-end-compile --backends eager sdpa+compile --out $R"
    BENCH_G="$D4RT bench --model checkpoints/tiny-synthetic --backends torch-eager-float32,torch-sdpa-float32 --batch-sizes 64 --repeats 2 --warmup 1 --json $R/bench-model.json"
    ATTENTION_REST="$PY benchmarks/attention.py --cpu-smoke --name attention-more --out $R"
    PRECISION="$PY benchmarks/precision_speed.py --device cpu --preset tiny --frames 4 --queries 2048 --batch 1024 --repeats 1 --runners torch-fp32 torch-bf16 --workdir $WORK/precision --out $R"
    CPP_VS_PY="$PY benchmarks/cpp_vs_python.py --cpu-smoke --work $WORK/cpp-bench --out $R"
    B_TESTS=300; B_TRAIN=300; B_ATT=120; B_E2E=180; B_BENCH=120; B_CPP=420
else
    GPU_TESTS="TRITON_INTERPRET=0 $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_kernels_model.py --junitxml=$WORK/logs/kernel_tests.xml"
    TRAIN="$D4RT train --synthetic 64 --num-workers 8 --preset tiny --max-minutes 1.5 --accelerator gpu --output-dir $WORK/train"
    EVAL_CLIPS=8
    ATTENTION="$PY benchmarks/attention.py --presets g --out $R"
    ATTENTION_BWD="$PY benchmarks/attention.py --presets g --backward --out $R"
    E2E_G="$PY benchmarks/end_to_end.py --presets g --queries 65536 --out $R"
    E2E_REST="$PY benchmarks/end_to_end.py --presets tiny base --queries 65536 --name end-to-end-tiny-base --out $R"
    E2E_COMPILE="$PY benchmarks/end_to_end.py --presets g --queries 65536 --name end-to-end-compile --backends eager sdpa+compile triton+compile --out $R"
    BENCH_G="$D4RT bench --model g --batch-sizes 4096,65536 --repeats 5 --warmup 2 --json $R/bench-g.json"
    ATTENTION_REST="$PY benchmarks/attention.py --presets tiny base --name attention-tiny-base --out $R"
    # bf16 rows: the base whole job (encode 16 x 256^2 + 32k queries) in fp32, bf16 and bf16 compiled on the GPU
    PRECISION="$PY benchmarks/precision_speed.py --device cuda --preset base --runners torch-fp32 torch-bf16 torch-bf16-compiled --workdir $WORK/precision --out $R"
    # the C++ runtime on CUDA AOTInductor packages with our Triton attention kernels inside (docs/cpp.md), against
    # the Python torch path: builds the C++ (cmake, this torch's libtorch), exports base, times the whole job
    CPP_VS_PY="$PY benchmarks/cpp_vs_python.py --device cuda --work $WORK/cpp-bench --out $R"
    B_TESTS=180; B_TRAIN=180; B_ATT=180; B_E2E=150; B_BENCH=120; B_CPP=300
fi
# the training step: a time-boxed run, then held-out evaluation and the diagnostics of the trained weights
TRAIN_STEP="$TRAIN && $D4RT evaluate --ckpt $WORK/train/pretrained --synthetic $EVAL_CLIPS --test-data $WORK/heldout --output $R/eval.json && $PY scripts/diagnose_training.py --ckpt $WORK/train/pretrained --clips $WORK/heldout --json $R/diagnostics.json"

if [ "$PART" = 1 ]; then
    # correctness and training overlap (neither is timed); the benchmarks wait for both and run alone
    step kernel_tests $B_TESTS "$GPU_TESTS" &
    tests_pid=$!
    step train_tiny $B_TRAIN "$TRAIN_STEP" &
    train_pid=$!
    wait $tests_pid $train_pid
    step attention_g $B_ATT "$ATTENTION"
    step end_to_end_g $B_E2E "$E2E_G"
    step bench_model_g $B_BENCH "$BENCH_G"
else
    # (benchmarks/compile_check.py needs no GPU: it runs on any machine, not here)
    step attention_g_backward $B_ATT "$ATTENTION_BWD"
    step precision_base $B_BENCH "$PRECISION"
    step end_to_end_tiny_base $B_E2E "$E2E_REST"
    step attention_tiny_base $B_ATT "$ATTENTION_REST"
    step end_to_end_g_compile $B_E2E "$E2E_COMPILE"
    step bench_model_g $B_BENCH "$BENCH_G"
    step cpp_vs_python $B_CPP "$CPP_VS_PY"
fi

{
    echo "gpu_check.sh part $PART finished after $(( $(date +%s) - START )) s of ${BUDGET} s; commit $D4RT_COMMIT"
    awk -F'\t' 'NR > 1 { n[$5 ~ /^ok/ ? "ok" : ($5 ~ /^skipped/ ? "skipped" : "failed or timed out")]++ }
                END { for (k in n) printf "%s: %d\n", k, n[k] }' "$STEPS" | sort
    echo "results (in gpu_check.tar.gz): $(cd "$WORK" && find results -type f | sort | tr '\n' ' ')"
} > "$OUT/summary.txt"
cp "$OUT/summary.txt" "$WORK/summary.txt"
pack
cat "$OUT/steps.md" "$OUT/summary.txt"
# exit 0 when every step that ran passed; 1 when one failed or timed out (skipped steps do not count)
awk -F'\t' 'NR > 1 && $5 !~ /^(ok|skipped)/ { bad = 1 } END { exit bad }' "$STEPS"
}

main "$@"

#!/usr/bin/env bash
# The GPU path, measured in one go (experiments/README.md, "GPU check"): at most 8 minutes on one
# H100, random weights, no network, no ImageNet.
#
#   bash experiments/gpu_check.sh                 # on a machine with a CUDA GPU
#   bash experiments/gpu_check.sh --smoke         # on CPU: tiny models at 32 px, the same steps (CI)
#   PYTHON=/path/to/python bash experiments/gpu_check.sh --out DIR
#
# Steps, each under its own `timeout` (a failure or a timeout is a row of the table, never the end):
#   data          a textures ImageFolder (experiments/textures_folder.py), 224 px
#   finetune_vit  bench_finetune.py, +experiment=vit_b, timm ViT-B/16 with random weights: the
#                 one-image loop (B=1) against an instance batch, fp32 against bf16, eager against compile
#   finetune_cnn  the same for +experiment=resnet101 (timm ResNet-101)
#   metrics       bench_metrics.py: the paper suite (POS, NEG, INS, DEL) against its forward-pass floor
#   run           python -m ltx.run +experiment=vit_b trainer=gpu on the generated folder, reduced sizes
# then prints one table (step, what, seconds, key numbers, result), writes it to OUT/gpu_check.md
# with the estimate of the paper's full protocol on this device, and exits 1 if a step failed.
# Logs: OUT/logs/<step>.log. OUT defaults to outputs/gpu_check/<date>_<time>.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

SMOKE=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --out) OUT="${2:?--out needs a directory}"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (--smoke, --out DIR, --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PYTHON:-}" ]; then  # the Makefile's venv if there is one
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT="${OUT:-outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}"
if [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "gpu_check.sh: $OUT is not empty: give a new folder with --out" >&2
    exit 2
fi
mkdir -p "$OUT/logs" || exit 2
OUT="$(cd "$OUT" && pwd)"
DATA="$OUT/data"
export PYTHONUNBUFFERED=1

if [ "$SMOKE" = 1 ]; then
    MODE="smoke (CPU, tiny models at 32 px: checks the steps run, measures nothing)"
    DEVICE=cpu
    # One thread: tiny models gain nothing from more, and on 2 shared cores (load average 7-8) the
    # smoke run took 488 s with 2 threads against 114 s with 1.
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    # torch.compile's inductor takes minutes per model on 2 cores: trace with aot_eager instead
    # (dynamo and AOT autograd as on the GPU, no code generation), where torch knows the variable.
    export TORCH_COMPILE_OVERRIDE_BACKENDS="${TORCH_COMPILE_OVERRIDE_BACKENDS:->=0:aot_eager}"
    SIZE=32; TRAIN_PER_CLASS=1; VAL_PER_CLASS=1; INSTANCES=2
    SMALL_DATA=(data.image_size=32 data.num_workers=0)
    VIT=(backbone.vit_b.name=ltx_textures_vit +backbone.vit_b.model_kwargs.img_size=32 backbone.vit_b.image_size=32)
    CNN=(backbone.resnet101.name=ltx_textures_resnet backbone.resnet101.image_size=32)
    VIT_WHAT="ltx_textures_vit at 32 px"; CNN_WHAT="ltx_textures_resnet at 32 px"
    FINETUNE=(--device cpu --instances 2 --steps 1 --batch-sizes 1 2 --method-images 1 --repeats 1)
    METRICS=(--device cpu --models tiny_vit --images 2 --repeats 1 --suites paper)
    RUN=(trainer=cpu pretrain.epochs=1 pretrain.batch_size=2 explain.num_images=2 explain.batch_size=2
         method.ltx.steps=1 method.ltx_sel.steps=1)
    RUN_WHAT="2 val images, 1 pretraining epoch, 1 finetuning step, trainer=cpu"
    LIMIT_DATA=120; LIMIT_VIT=400; LIMIT_CNN=400; LIMIT_METRICS=200; LIMIT_RUN=400
else
    MODE="GPU"
    DEVICE=cuda
    SIZE=224; TRAIN_PER_CLASS=2; VAL_PER_CLASS=4; INSTANCES=16
    SMALL_DATA=(data.num_workers=0)
    VIT=(); CNN=()
    VIT_WHAT="timm ViT-B/16, 224 px"; CNN_WHAT="timm ResNet-101, 224 px"
    # 25 finetuning steps (the experiments' method.ltx.steps), 16 instances, best of 2 repeats
    FINETUNE=(--device cuda --instances "$INSTANCES" --batch-sizes 1 "$INSTANCES" --method-images 8 --repeats 2)
    METRICS=(--device cuda --models tiny_vit vit_base --images 512 64 --suites paper)
    RUN=(trainer=gpu pretrain.epochs=2 explain.num_images=32 explain.batch_size=16)
    RUN_WHAT="2 pretraining epochs on 8 images, 32 val images explained, 25 finetuning steps, trainer=gpu"
    # The limits add up to 445 s; with the device check and each step's 5 s grace after its limit,
    # under 8 minutes even if every step times out.
    LIMIT_DATA=20; LIMIT_VIT=160; LIMIT_CNN=120; LIMIT_METRICS=45; LIMIT_RUN=100
fi
# fp32 against bf16 at the batch size (eager), eager against compile (bf16): one compilation per model
EXTRAS=(bf16 bf16+compile)
EXTRAS_WHAT=$(printf '%s, ' "${EXTRAS[@]}"); EXTRAS_WHAT=${EXTRAS_WHAT%, }

# ---------------------------------------------------------------------------------------------
# Key numbers: each reads a step's log, prints the numbers for the table and fails if they are not there.

cell() {  # one table cell: no pipes, no newlines, at most 400 characters
    local text
    text=$(tr '|\n' '/ ' | sed 's/  */ /g; s/ $//')
    printf '%s' "${text:0:400}"
}

key_data() {
    grep -o 'wrote [0-9]* textures images of [0-9]* px' "$1"
}

key_finetune() {  # LOG MODEL: inst/s of the LTX rows (25 steps on the GPU), × the one-image loop, peak memory
    awk -F' *[|] *' -v model="$2" -v want=$((2 + ${#EXTRAS[@]})) '
        $2 == model && $3 == "ltx" {
            rows++; out = out sep $5 " " $6; sep = " · "
            if ($5 !~ /^seq/ && $9 + 0 > best) { best = $9 + 0; peak = $11 }
        }
        END {
            if (rows) printf "inst/s: %s; best ×%.2f the one-image loop, %s MiB/inst", out, best, peak
            if (rows < want) exit 1
        }' "$1" || return 1
    ! grep -q 'torch.compile failed' "$1" || { echo "torch.compile failed: eager fallback"; return 1; }
}
key_finetune_vit() { key_finetune "$1" vit_b; }
key_finetune_cnn() { key_finetune "$1" resnet101; }

key_metrics() {  # LOG: suite and floor ms per image, per model
    awk '
        / suite .* floor .* ratio / {
            for (i = 1; i <= NF; i++) {
                if ($i == "suite") suite = $(i + 1)
                if ($i == "floor") floor = $(i + 1)
                if ($i == "ratio") ratio = $(i + 1)
            }
            out = out sep $1 " " $2 " " $3 ": suite " suite " ms/img, floor " floor ", ratio " ratio; sep = " · "
            rows++
        }
        END { if (!rows) exit 1; print out }' "$1" || return 1
    [ "$(grep -c ' suite .* floor .* ratio ' "$1")" -eq "$METRIC_MODELS" ]
}

key_run() {  # LOG: the run's own stage summary, and its results
    local results="$OUT/run/results.csv"
    [ -f "$results" ] && grep -q ',ltx,' "$results" || { echo "no ltx rows in $results"; return 1; }
    awk '
        /^ (pretrain|explain|evaluate|total) / {
            line = $0; sub(/^ +/, "", line); split(line, a, /  +/); out = out sep a[1] " " a[2]; sep = ", "
        }
        END { if (out == "") exit 1; printf "%s", out }' "$1" || return 1
    echo "; $(($(wc -l < "$results") - 1)) values in results.csv"
}

# ---------------------------------------------------------------------------------------------

ROWS=()
FAILED=0
step() {  # NAME LIMIT_S WHAT -- COMMAND...: run under timeout, log, time, read the key numbers
    local name=$1 limit=$2 what=$3 log="$OUT/logs/$1.log"
    shift 4
    echo "[gpu_check] $name: $what (limit $limit s; log $log)" >&2
    local start end rc key result
    start=$(date +%s.%N)
    timeout --kill-after=5 "$limit" "$@" >"$log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    key=$("key_$name" "$log" 2>/dev/null)
    local found=$?
    if [ "$rc" != 0 ] && [ -z "$key" ]; then  # what the step had got to
        key=$(grep -v '^\s*$' "$log" | tail -n 1)
    fi
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        result="TIMEOUT ($limit s)"
    elif [ "$rc" != 0 ]; then
        result="FAIL (exit $rc)"
    elif [ "$found" != 0 ]; then
        result="FAIL (numbers missing)"
    else
        result="pass"
    fi
    [ "$result" = pass ] || FAILED=1
    ROWS+=("| $name | $(cell <<<"$what") | $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }') | $(cell <<<"$key") | $result |")
}

START=$(date +%s)
DEVICE_INFO=$("$PYTHON" - "$DEVICE" <<'EOF' 2>&1
import sys, torch
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible: run on a GPU machine, or --smoke for the CPU check")
    name = f"{torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible), CUDA {torch.version.cuda}"
else:
    name = f"CPU, {torch.get_num_threads()} threads"
print(f"{name}, torch {torch.__version__}")
EOF
)
if [ $? != 0 ]; then
    echo "gpu_check.sh: $(tail -n 1 <<<"$DEVICE_INFO")" >&2
    exit 2
fi
COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown)
METRIC_MODELS=$(($(printf '%s\n' "${METRICS[@]}" | awk '/^--/ { on = ($0 == "--models"); next } on' | wc -l)))
echo "[gpu_check] $MODE on $DEVICE_INFO, commit $COMMIT; output $OUT" >&2

step data "$LIMIT_DATA" "textures ImageFolder, $SIZE px, $((8 * TRAIN_PER_CLASS)) train + $((8 * VAL_PER_CLASS)) val images" -- \
    "$PYTHON" experiments/textures_folder.py "$DATA" --size "$SIZE" \
    --train-per-class "$TRAIN_PER_CLASS" --val-per-class "$VAL_PER_CLASS"
step finetune_vit "$LIMIT_VIT" "bench_finetune +experiment=vit_b, $VIT_WHAT, random weights, $INSTANCES instances: the B=1 loop vs B=$INSTANCES in fp32, $EXTRAS_WHAT" -- \
    "$PYTHON" experiments/bench_finetune.py +experiment=vit_b "data.root=$DATA" backbone.vit_b.weights=random \
    "${SMALL_DATA[@]}" "${VIT[@]}" "${FINETUNE[@]}" --scopes all --no-vmap --extras "${EXTRAS[@]}" --methods gradcam ig
step finetune_cnn "$LIMIT_CNN" "bench_finetune +experiment=resnet101, $CNN_WHAT, random weights, $INSTANCES instances: the B=1 loop vs B=$INSTANCES in fp32, $EXTRAS_WHAT" -- \
    "$PYTHON" experiments/bench_finetune.py +experiment=resnet101 "data.root=$DATA" backbone.resnet101.weights=random \
    "${SMALL_DATA[@]}" "${CNN[@]}" "${FINETUNE[@]}" --scopes all --no-vmap --extras "${EXTRAS[@]}" --methods gradcam ig
step metrics "$LIMIT_METRICS" "bench_metrics ${METRICS[*]}" -- \
    "$PYTHON" experiments/bench_metrics.py "${METRICS[@]}"
step run "$LIMIT_RUN" "ltx.run +experiment=vit_b, $VIT_WHAT, random weights: $RUN_WHAT" -- \
    "$PYTHON" -m ltx.run +experiment=vit_b "data.root=$DATA" backbone.vit_b.weights=random "${SMALL_DATA[@]}" "${VIT[@]}" \
    "${RUN[@]}" explain.grid_images=1 trainer.enable_progress_bar=false "hydra.run.dir=$OUT/run"

# The paper's protocol on this device (experiments/README.md, "GPU check"): 50,000 images, ViT-B, one
# class mode, LTX finetuned 25 steps per image, the paper suite on its maps.
estimate() {
    local ft="$OUT/logs/finetune_vit.log" suite
    suite=$(awk '/ suite .* floor / { for (i = 1; i <= NF; i++) if ($i == "suite") ms[$1] = $(i + 1); any = $1 }
                 END { v = ("vit_base" in ms) ? ms["vit_base"] : ms[any]; print v }' "$OUT/logs/metrics.log" 2>/dev/null)
    awk -F' *[|] *' -v suite="$suite" -v smoke="$SMOKE" '
        $2 == "vit_b" && $3 == "ltx" { if ($5 ~ /^seq/) seq = $6 + 0; else if ($6 + 0 > best) { best = $6 + 0; label = $5 } }
        END {
            if (!seq || !best || suite == "") { print "Estimate of the paper protocol: not computed (a step it reads failed)."; exit }
            s = suite / 1000
            printf "Estimate of the paper protocol on this device (ViT-B, 50,000 images, one class mode, LTX 25 steps + the paper suite on its maps)%s:\n", smoke ? " [smoke: tiny models, 1 step; the arithmetic only, not an estimate]" : ""
            printf "  batched (%s): 50,000 × (1 / %.3g inst/s + %.4g s suite) / 3600 = %.2f h;", label, best, s, 50000 * (1 / best + s) / 3600
            printf " one-image loop (B=1, no Trainer per image: a lower bound of the official code): 50,000 × (1 / %.3g + %.4g) / 3600 = %.2f h. Goal: under 1 h.\n", seq, s, 50000 * (1 / seq + s) / 3600
        }' "$ft"
}

TOTAL=$(($(date +%s) - START))
{
    echo "## GPU check: $MODE"
    echo
    echo "$DEVICE_INFO; commit $COMMIT; $(date '+%Y-%m-%d %H:%M'); total $TOTAL s; logs in $OUT/logs"
    echo
    echo "| step | what | seconds | key numbers | result |"
    echo "|---|---|---:|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    estimate
} | tee "$OUT/gpu_check.md"
exit "$FAILED"

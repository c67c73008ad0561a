#!/usr/bin/env bash
# One prepared run for a lent GPU: every accelerator number of the project, beside its baselines, in one go.
#
#   bash benchmarks/gpu_check.sh            # call 1 on the GPU machine (device tool), repo root: parts a-c, <= 465 s
#   GPU_CHECK_BUDGET_S=315 bash benchmarks/gpu_check.sh --parts "f e"   # call 2, at once on the warm machine
#   bash benchmarks/gpu_check.sh --smoke    # every part at tiny sizes on a CPU: the same code paths, ~3 minutes
#   bash benchmarks/gpu_check.sh --parts "a c"   # only some parts
#
# A lent GPU gives 15 minutes in all, start-up (~40 s) included, and goes back after 30 s idle: call 1
# (timeout 480) then call 2 (timeout 330), issued back to back, fit with about a minute to spare. The first
# H200 run (2026-11-27) sized the limits: JAX compiles 12-30 s per step variant there, and the 1M-point k-NN
# takes a minute or more per call.
#
# Parts, run in this order (each with its own time limit, all under one overall budget; a part that fails
# or runs out of time is reported with the rows its log printed, and the next one runs):
#   a  DeepSMOTE training step at both paper sizes (200x200x3 B=256, 396x396x1 B=100), JAX bf16, fp32 and bf16
#      with the two edge layers (1-3 channels, full resolution) in fp32, beside PyTorch fp32 and bf16+channels_last
#   b  the paper's own run (100 images of 200x200, 1,000 epochs, batch 100; float32): steps only, wall cold and warm
#   c  latent SMOTE: a k-NN tile sweep at n = 100,000, then n = 20,000 / 100,000 / 1,000,000 (d = 512; the
#      million in one call with the fastest tile) beside imbalanced-learn (when its wheel travelled)
#   d  (on request: met its target on 2026-11-27) InceptionV3 training step at 299x299, B = 64, beside torchvision
#      (ResNet50 too with PARTS_D_MODELS="inception_v3 resnet50")
#   f  where the step's time goes at 396x396 (benchmarks/step_profile.py): a Perfetto trace of the step per
#      dtype summed by kernel, HLO op and kernel class, and every convolution's fwd+bwd per dtype with the
#      BatchNorm after it (masked as in the step, and unmasked)
#   e  a quality run on real data: magnetic_tile blowhole crops vs free (amoled_dent_200, 1,000 epochs, 3 seeds;
#      small CNN 20 epochs)
#
# Outputs under $OUT (default benchmarks/results/gpu_check): one JSON per part (a_autoencoder_step.json, ...,
# machine / driver / versions / date inside), summary.md and summary.json, and gpu_check_files.tar.gz with each
# part's Markdown table, its log and the quality report -- at most 8 files, as the device tool returns. The
# summary table is printed last. Packages the GPU image lacks travel as wheels in .whl/ (see
# benchmarks/prepare_wheels.sh, which also copies the magnetic_tile subset part e reads into .gpu_data/).
set -uo pipefail

usage() { sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
SMOKE=0
PARTS="a b c"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --parts) [[ $# -ge 2 ]] || { echo "error: --parts needs a list such as \"a c\"" >&2; exit 2; }; PARTS="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for p in $PARTS; do
  [[ "$p" =~ ^[a-f]$ ]] || { echo "error: --parts: unknown part '$p' (choose from a b c d e f)" >&2; exit 2; }
done

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
START=$(date +%s)
if [[ $SMOKE == 1 ]]; then BUDGET=${GPU_CHECK_BUDGET_S:-560}; else BUDGET=${GPU_CHECK_BUDGET_S:-465}; fi

if [[ $SMOKE == 0 ]] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
    .whl/*.whl && export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH} \
    || echo "warning: installing the carried wheels failed; parts that need them will say so"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false \
  TF_CPP_MIN_LOG_LEVEL=2 GPU_CHECK_SMOKE=$SMOKE
unset DEEPSMOTE_JAX_CACHE   # part b measures the persistent compilation cache itself

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$WORK/gpu.txt"
fi
echo "gpu_check: parts '$PARTS', smoke=$SMOKE, budget ${BUDGET}s, work folder $WORK, results in $OUT"
# Versions and devices first, so a run cut short still says what it ran on.
timeout 60 "$PY" -c "import sys; from benchmarks import common; common.write_json(sys.argv[1], common.machine_info())" \
  "$WORK/machine.json" >/dev/null 2>&1 || echo "warning: machine info not recorded"

# run_part ID NAME LIMIT_S CMD... : runs CMD (which writes $WORK/NAME.json) under the smaller of LIMIT_S and the
# time left, records its status, copies its JSON to $OUT and refreshes the archive of everything else.
run_part() {
  local id=$1 name=$2 limit=$3; shift 3
  [[ " $PARTS " == *" $id "* ]] || return 0
  local left=$(( BUDGET - ($(date +%s) - START) - 5 ))
  (( limit > left )) && limit=$left
  local status rc t0=$(date +%s)
  if (( limit < 15 )); then
    status="skipped"; rc=-1
    echo "part $id ($name): skipped, only ${left}s of the budget left"
  else
    echo "part $id ($name): running, limit ${limit}s"
    timeout -k 10 "$limit" "$@" > "$WORK/$id.log" 2>&1
    rc=$?
    if (( rc == 124 || rc == 137 )); then status="timeout"; elif (( rc == 0 )); then status="ok"; else status="failed"; fi
    tail -n 4 "$WORK/$id.log" | sed "s/^/  [$id] /"
  fi
  local wall=$(( $(date +%s) - t0 ))
  "$PY" benchmarks/gpu_check_summary.py --record "$WORK" --part "$id" --name "$name" --status "$status" \
    --rc "$rc" --wall "$wall" --limit "$limit"
  cp "$WORK/${id}_$name.json" "$OUT/" 2>/dev/null
  tar -czf "$OUT/gpu_check_files.tar.gz.tmp" -C "$WORK" . && mv "$OUT/gpu_check_files.tar.gz.tmp" "$OUT/gpu_check_files.tar.gz"
  echo "part $id ($name): $status in ${wall}s"
}

if [[ $SMOKE == 1 ]]; then
  A=(--cases micro_16:1:8 --dtypes bfloat16 float32 bfloat16+f32edges --steps-per-call 1 --repeats 2
     --torch-modes fp32 bf16_cl --torch-threads 1)
  B=(--preset micro_16 --channels 1 --images 16 --epochs 2 --batch 8 --steps-per-call 1)
  C=(--n 200 1000 --d 16 --large-n 1000 --large-d 16 --baseline-max-n 1000 --repeats 2 --budget-s 5
     --tile-sweep 64 32x128 --sweep-n 1000 --once-from 1000)
  D=(--models small_cnn --image-size 32 --batch 4 --dtypes float32 --steps-per-call 1 --repeats 2 --torch-modes fp32)
  E=(--smoke --synthetic-fallback)
  F=(--cases micro_16:1:4 --dtypes float32 --trace-calls 1 --steps-per-call 1 --repeats 1 --trace-dir "$WORK/traces")
  LIMITS=(120 90 60 60 200 60)
else
  A=(--cases amoled_dent_200:3:256 amoled_scratch_396:1:100 --dtypes bfloat16 float32 bfloat16+f32edges
     --steps-per-call 10 --repeats 5 --torch-modes fp32 bf16_cl)
  B=(--dtype float32)  # the faster step on the H200 at 200x200 (results/h200-2026-11-27.md); 'auto' gave 11.4 s
  C=(--n 20000 100000 1000000 --d 512 --large-d 512 --baseline-max-n 20000 --repeats 3 --budget-s 10
     --tile-sweep 1024 1024x8192 2048x8192 4096x4096 --sweep-n 100000 --once-from 1000000)
  D=(--models ${PARTS_D_MODELS:-inception_v3} --image-size 299 --batch 64 --dtypes bfloat16 --steps-per-call 10
     --repeats 10 --torch-modes fp32 bf16_cl)
  E=(--data .gpu_data/magnetic_tile --epochs 1000 --seeds 0 1 2 --classifier small_cnn --classifier-epochs 20)
  F=(--cases amoled_scratch_396:1:100 --dtypes bfloat16 float32 --trace-calls 2 --steps-per-call 10 --repeats 5
     --norm-dtypes bfloat16 --trace-dir "$WORK/traces")
  LIMITS=(220 80 150 110 170 140)  # e: 1,000 epochs 83 s, 9 classifiers ~25 s, the report ~50 s
fi

run_part a autoencoder_step "${LIMITS[0]}" "$PY" benchmarks/autoencoder_step.py "${A[@]}" --json "$WORK/a_autoencoder_step.json"
run_part b paper_run "${LIMITS[1]}" "$PY" benchmarks/paper_run.py "${B[@]}" --json "$WORK/b_paper_run.json"
run_part c smote "${LIMITS[2]}" "$PY" benchmarks/smote.py "${C[@]}" --out "$WORK/c_smote.json"
run_part d classifier_step "${LIMITS[3]}" "$PY" benchmarks/classifier_step.py "${D[@]}" --json "$WORK/d_classifier_step.json"
run_part f step_profile "${LIMITS[5]}" "$PY" benchmarks/step_profile.py "${F[@]}" --json "$WORK/f_step_profile.json"
run_part e quality_run "${LIMITS[4]}" "$PY" benchmarks/quality_run.py "${E[@]}" --json "$WORK/e_quality_run.json"

"$PY" benchmarks/gpu_check_summary.py --summarize "$WORK" --out "$OUT" --smoke "$SMOKE"
echo "gpu_check: done in $(( $(date +%s) - START ))s; results in $OUT"

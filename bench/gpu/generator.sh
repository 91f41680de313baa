#!/usr/bin/env bash
# The generator on one GPU, in one time-boxed call (issue 19).
#
# Stages (each under `timeout`, all inside BUDGET seconds; logs in $W/logs, a line each in $W/stages.tsv):
#   env         nvidia-smi, driver, torch / CUDA / package versions, seeds, these variables -> env.json
#   warm-data   decode the dataset into the datasets cache once
#   train-gen   `spm-hf train-generator --preset GEN_PRESET` (accelerate, --mixed-precision MIXED, the
#               preset's EMA) for GEN_MINUTES (what BUDGET leaves after the reserves below)
#   train-oracle  beside it, concurrently on the one GPU: the same run with --exclude-classes FORGET (ORACLE=1)
#   train-clf   beside them: the classifier the app pairs with the generator (skipped when CLASSIFIER is given)
#   evaluate    `spm-hf evaluate-generator`: judge accuracy per class, FORGET's rate before / after forget /
#               oracle, FID and FID_O where Inception weights exist (else images.npz comes back for
#               `spm-hf evaluate-generator --fid-from` on the CPU box)
#   model       the generator folder without its memory (rebuilt from the data) as <= 15 MiB tar parts for
#               $OUT, if it is under MODEL_MAX_MB
#   app         bench/gpu/app_timing.py: forget FORGET + regenerate the grid in the demo, headless (Chromium
#               via bench/app_demo.py if there is one, else gradio_client, else the same calls without gradio),
#               with before/after images
#   summary     summary.md / summary.json and results.tgz into $OUT
#
# Usage (device):   OUT=<folder that comes back> bash bench/gpu/generator.sh
#       (CPU, tiny): DRY_RUN=1 OUT=/tmp/dry2 bash bench/gpu/generator.sh
# The data, the judge and the wheels the device lacks travel as `carry` folders: python bench/gpu/stage.py --app.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---------------------------------------------------------------- settings (override from the environment)
# Generator presets: the first name the trainer knows is used (the presets are being renamed gen-*).
if [ "$DRY_RUN" = 1 ]; then
  GEN_PRESETS=${GEN_PRESET:-gen-tiny tiny}
  CLF_PRESET=${CLF_PRESET:-tiny}
  CLF_ARGS=${CLF_ARGS:---epochs 1 --max-train-samples 300 --max-test-samples 200}
  DEVICE=${DEVICE:-cpu}
  GEN_MINUTES=${GEN_MINUTES:-}           # empty: GEN_STEPS steps
  GEN_STEPS=${GEN_STEPS:-3}
  GEN_ARGS=${GEN_ARGS:---max-train-samples 200}
  EVAL_SAMPLES=${EVAL_SAMPLES:-2}        # images per class
  EVAL_STEPS=${EVAL_STEPS:-3}
  FID_REAL=${FID_REAL:-20}
  APP_IMAGES=${APP_IMAGES:-2}
  APP_STEPS=${APP_STEPS:-3}
  GEN_THREADS=${GEN_THREADS:-1}          # the CPU box is shared
  W=${WORK:-$ROOT/outputs/gpu/generator-dry}
else
  GEN_PRESETS=${GEN_PRESET:-gen-cifar10-paper cifar10-paper}
  CLF_PRESET=${CLF_PRESET:-cifar10-cpu}
  CLF_ARGS=${CLF_ARGS:---epochs 3}
  DEVICE=${DEVICE:-cuda}
  GEN_MINUTES=${GEN_MINUTES:-auto}       # auto: what BUDGET leaves after the reserves below
  GEN_STEPS=${GEN_STEPS:-}
  GEN_ARGS=${GEN_ARGS:---warmup-steps 500}   # the paper's 19,600 warm-up steps would never end in minutes
  EVAL_SAMPLES=${EVAL_SAMPLES:-100}
  EVAL_STEPS=${EVAL_STEPS:-25}
  FID_REAL=${FID_REAL:-1000}
  APP_IMAGES=${APP_IMAGES:-4}
  APP_STEPS=${APP_STEPS:-25}
  GEN_THREADS=${GEN_THREADS:-4}
  W=${WORK:-$ROOT/outputs/gpu/generator}
fi
GEN_DATASET=${GEN_DATASET:-cifar10}     # the tiny preset names none
CLASSIFIER=${CLASSIFIER:-}               # a trained classifier folder for the app; empty: train CLF_PRESET
FORGET=${FORGET:-cat}
ORACLE=${ORACLE:-1}
MIXED=${MIXED:-bf16}
GUIDANCE=${GUIDANCE:-15}                 # the guidance scale docs/results.md's cifar10-cpu rows were read at
RESERVE_EVAL=${RESERVE_EVAL:-110}        # seconds kept for evaluate-generator
RESERVE_APP=${RESERVE_APP:-60}           # ... for the app
RESERVE_PACK=${RESERVE_PACK:-20}
SAVE_SLACK=${SAVE_SLACK:-45}             # a training run's last grid and save, after its --max-minutes
MODEL_MAX_MB=${MODEL_MAX_MB:-40}
OUT=${OUT:-$W/out}
[ "${FRESH:-0}" = 1 ] && rm -rf "$W"

main() {
  setup_env || { stamp "environment set-up failed"; return 1; }
  local preset; preset=$($HELPER gen-preset --candidates $GEN_PRESETS) || { stamp "no generator preset among: $GEN_PRESETS"; return 1; }
  local fid=no
  $PYTHON -c "from spm_hf.evaluation.fid import inception_weights_path as p; p()" > /dev/null 2>&1 && fid=yes
  run_stage env 60 $HELPER env --out "$W/env.json" --device "$DEVICE" --var DRY_RUN="$DRY_RUN" BUDGET="$BUDGET" \
      GEN_PRESET="$preset" CLF_PRESET="$CLF_PRESET" CLF_ARGS="$CLF_ARGS" CLASSIFIER="$CLASSIFIER" MIXED="$MIXED" \
      GEN_DATASET="$GEN_DATASET" GEN_MINUTES="$GEN_MINUTES" GEN_STEPS="$GEN_STEPS" GEN_ARGS="$GEN_ARGS" FORGET="$FORGET" ORACLE="$ORACLE" \
      EVAL_SAMPLES="$EVAL_SAMPLES" EVAL_STEPS="$EVAL_STEPS" GUIDANCE="$GUIDANCE" FID="$fid" FID_REAL="$FID_REAL" \
      APP_IMAGES="$APP_IMAGES" APP_STEPS="$APP_STEPS" GEN_THREADS="$GEN_THREADS" SPM_HF_DATA="${SPM_HF_DATA:-}" \
      SPM_HF_JUDGE="${SPM_HF_JUDGE:-}"
  run_stage warm-data "$(limit_for 0 120)" $HELPER warm-data --dataset "$GEN_DATASET" || return 1

  local reserve=$(( RESERVE_EVAL + RESERVE_APP + RESERVE_PACK ))
  local budget_args=(--max-steps "$GEN_STEPS")
  if [ -n "$GEN_MINUTES" ]; then
    local minutes=$GEN_MINUTES
    if [ "$minutes" = auto ]; then
      minutes=$(awk -v s="$(limit_for $(( reserve + SAVE_SLACK )))" 'BEGIN { m = s / 60; print (m > 0.5 ? int(m * 10) / 10 : 0.5) }')
    fi
    stamp "generator training: $minutes minutes"
    budget_args=(--max-minutes "$minutes")
    [ -n "$GEN_STEPS" ] && budget_args+=(--max-steps "$GEN_STEPS")
  fi
  local train_limit; train_limit=$(limit_for "$reserve")
  local common=(--preset "$preset" --dataset "$GEN_DATASET" --mixed-precision "$MIXED" --eval-every 0 --checkpoint-every 0 --no-progress
                "${budget_args[@]}" $GEN_ARGS)
  OMP_NUM_THREADS=$GEN_THREADS run_stage train-gen "$train_limit" \
      $CLI train-generator "${common[@]}" --output-dir "$W/gen" &
  local g1=$! g2= c=
  if [ "$ORACLE" = 1 ]; then
    OMP_NUM_THREADS=$GEN_THREADS run_stage train-oracle "$train_limit" \
        $CLI train-generator "${common[@]}" --exclude-classes "$FORGET" --output-dir "$W/gen-oracle" &
    g2=$!
  fi
  local classifier=$CLASSIFIER
  if [ -z "$classifier" ]; then
    classifier=$W/clf
    OMP_NUM_THREADS=$GEN_THREADS run_stage train-clf "$train_limit" \
        $CLI train-classifier --preset "$CLF_PRESET" --output-dir "$classifier" $CLF_ARGS &
    c=$!
  fi
  wait $g1 $g2
  [ -f "$W/gen/model_index.json" ] || { stamp "no generator saved"; return 1; }

  local eval_args=(--model "$W/gen" --output-dir "$W/eval" --forget "$FORGET" --samples-per-class "$EVAL_SAMPLES"
                   --steps "$EVAL_STEPS" --guidance-scale "$GUIDANCE" --device "$DEVICE")
  [ -f "$W/gen-oracle/model_index.json" ] && eval_args+=(--retrained-model "$W/gen-oracle")
  if [ "$fid" = yes ]; then eval_args+=(--fid-real-samples "$FID_REAL"); else eval_args+=(--no-fid); fi
  OMP_NUM_THREADS=$GEN_THREADS run_stage evaluate "$(limit_for $(( RESERVE_APP + RESERVE_PACK )))" \
      $CLI evaluate-generator "${eval_args[@]}"

  run_stage model 60 $HELPER model-parts --model "$W/gen" --parts "$W/model-parts" --max-mb "$MODEL_MAX_MB" \
      --note "$W/model_parts.json"

  [ -n "$c" ] && wait "$c"
  if [ -f "$classifier/config.json" ]; then
    run_stage app "$(limit_for "$RESERVE_PACK")" $PYTHON "$ROOT/bench/gpu/app_timing.py" --classifier "$classifier" \
        --generator "$W/gen" --forget "$FORGET" --images-per-class "$APP_IMAGES" --steps "$APP_STEPS" \
        --device "$DEVICE" --out "$W/app"
  else
    stamp "app: skipped (no classifier at $classifier)"
  fi
}

init_work
main
stamp "main: exit $?"
wait  # a training stage still running when main stopped early (each is bounded by its timeout)
$HELPER gen-summary --work "$W" --out "$W/summary.md" --json "$W/summary.json"
pack_out "$W/summary.md" "$W/summary.json" "$W/eval/images.npz" "$W"/model-parts/*
cat "$W/summary.md"

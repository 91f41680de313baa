#!/usr/bin/env bash
# Paper-scale unlearning benchmark on one GPU, in one time-boxed call (issue 18).
#
# Stages (each under `timeout`, all inside BUDGET seconds; logs in $W/logs, a line each in $W/stages.tsv):
#   env        nvidia-smi, driver, torch / CUDA / package versions, seeds, these variables -> env.json
#   warm-data  decode the dataset into the datasets cache once, before WORKERS processes want it at once
#   calibrate  (EPOCHS=auto only) every model of the scenarios trained for CAL_EPOCHS, WORKERS at a time
#              (`spm-hf benchmark unlearning --train-only`); its wall time and the models' train_seconds
#              give the epochs that fit the time left
#   train      the same models for EPOCHS: SPM-C and the parametric model on all the data (seed 0) and,
#              per scenario, both families retrained without the forget set (seeds 0 and 1), WORKERS at once
#              on the one GPU; if it does not finish, the calibration models are benchmarked instead
#   bench-S    per scenario, side by side: delete from the SPM's memory, METHODS on the parametric model,
#              the oracles; results.json / results.md / gap_vs_time.png
#   timing     bench/unlearning_time.py: the SPM's deletion of "cat" (first call, then the median of
#              REPEATS) beside the fastest parametric method with comparable UA from bench-cat (TIMING_METHOD
#              names another), on the full training split
#   summary    summary.md / summary.json (every table) and results.tgz into $OUT
#
# Usage (device):   OUT=<folder that comes back> bash bench/gpu/paper_scale.sh
#       (CPU, tiny): DRY_RUN=1 OUT=/tmp/dry1 bash bench/gpu/paper_scale.sh
# The data, the wheels the device lacks and the judge travel as `carry` folders: python bench/gpu/stage.py.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---------------------------------------------------------------- settings (override from the environment)
if [ "$DRY_RUN" = 1 ]; then
  PRESET=${PRESET:-tiny}
  DEVICE=${DEVICE:-cpu}
  WORKERS=${WORKERS:-2}
  EPOCHS=${EPOCHS:-1}
  MAX_TRAIN=${MAX_TRAIN:-300}
  MAX_TEST=${MAX_TEST:-200}
  RESERVE_BENCH=${RESERVE_BENCH:-90}
  RESERVE_TIMING=${RESERVE_TIMING:-60}
  TIMING_METHOD=${TIMING_METHOD:-GA}     # GA reads only the forget set; FT over the full retain set takes minutes here
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # the CPU box is shared
  W=${WORK:-$ROOT/outputs/gpu/paper-scale-dry}
else
  PRESET=${PRESET:-cifar10-paper}         # classifier preset
  DEVICE=${DEVICE:-cuda}
  WORKERS=${WORKERS:-}                    # models trained at once; empty: all (2 originals + 4 oracles per scenario)
  EPOCHS=${EPOCHS:-auto}                  # a number, or auto: what fits after a calibration run
  MAX_TRAIN=${MAX_TRAIN:-}                # empty: the preset's (the whole training split)
  MAX_TEST=${MAX_TEST:-}
  RESERVE_BENCH=${RESERVE_BENCH:-170}     # seconds kept for the scenarios' benchmark runs
  RESERVE_TIMING=${RESERVE_TIMING:-90}    # ... and for bench/unlearning_time.py
  TIMING_METHOD=${TIMING_METHOD:-}        # empty: the fastest parametric method with comparable UA (bench-cat)
  W=${WORK:-$ROOT/outputs/gpu/paper-scale}
  export NVIDIA_TF32_OVERRIDE=${NVIDIA_TF32_OVERRIDE:-1}   # as in the cifar10-cpu GPU rows of docs/results.md
fi
SCENARIOS=${SCENARIOS:-cat random-10}
METHODS=${METHODS:-FT GA SalUn}
set -- $SCENARIOS
WORKERS=${WORKERS:-$(( 2 + 4 * $# ))}
CAL_EPOCHS=${CAL_EPOCHS:-0.1}
SAFETY=${SAFETY:-0.75}                    # fraction of the extrapolated time the train stage may plan to use
REPEATS=${REPEATS:-7}                     # warm deletions timed after the first call (>= 5)
RESERVE_PACK=${RESERVE_PACK:-15}
OUT=${OUT:-$W/out}
[ "${FRESH:-0}" = 1 ] && rm -rf "$W"

overrides=()
[ -n "$MAX_TRAIN" ] && overrides+=(--max-train-samples "$MAX_TRAIN")
[ -n "$MAX_TEST" ] && overrides+=(--max-test-samples "$MAX_TEST")

# models_root STAGE: the cache folder a --train-only stage printed ("models cached in ..."), if it finished.
models_root() { sed -n 's/^models cached in //p' "$W/logs/$1.log" 2>/dev/null | tail -1; }

main() {
  setup_env || { stamp "environment set-up failed"; return 1; }
  run_stage env 60 $HELPER env --out "$W/env.json" --device "$DEVICE" --var DRY_RUN="$DRY_RUN" \
      BUDGET="$BUDGET" PRESET="$PRESET" SCENARIOS="$SCENARIOS" METHODS="$METHODS" WORKERS="$WORKERS" \
      EPOCHS="$EPOCHS" CAL_EPOCHS="$CAL_EPOCHS" MAX_TRAIN="$MAX_TRAIN" MAX_TEST="$MAX_TEST" REPEATS="$REPEATS" \
      TIMING_METHOD="$TIMING_METHOD" SAFETY="$SAFETY" \
      SPM_HF_DATA="${SPM_HF_DATA:-}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-}" \
      NVIDIA_TF32_OVERRIDE="${NVIDIA_TF32_OVERRIDE:-}"
  run_stage warm-data "$(limit_for 0 120)" $HELPER warm-data --preset "$PRESET" || return 1

  local epochs=$EPOCHS cache=$W/cache
  if [ "$EPOCHS" = auto ]; then
    run_stage calibrate "$(limit_for $(( RESERVE_BENCH + RESERVE_TIMING + RESERVE_PACK )))" \
        $CLI benchmark unlearning --preset "$PRESET" --scenario $SCENARIOS --cache-dir "$W/cache-cal" \
        --epochs "$CAL_EPOCHS" --workers "$WORKERS" --train-only --no-progress "${overrides[@]}" || return 1
    local wall; wall=$(awk -F'\t' '$1=="calibrate"{print $3}' "$W/stages.tsv")
    epochs=$($HELPER epochs --models "$(models_root calibrate)" --cal-epochs "$CAL_EPOCHS" --wall "$wall" \
        --seconds "$(limit_for $(( RESERVE_BENCH + RESERVE_TIMING + RESERVE_PACK )))" --safety "$SAFETY" \
        --workers "$WORKERS" --preset "$PRESET") || return 1
    stamp "calibration: $epochs epochs fit"
    if [ "$epochs" = calibration ]; then epochs=$CAL_EPOCHS; cache=$W/cache-cal; fi
  fi
  if [ "$cache" = "$W/cache" ]; then
    if ! run_stage train "$(limit_for $(( RESERVE_BENCH + RESERVE_TIMING + RESERVE_PACK )))" \
        $CLI benchmark unlearning --preset "$PRESET" --scenario $SCENARIOS --cache-dir "$cache" \
        --epochs "$epochs" --workers "$WORKERS" --train-only --no-progress "${overrides[@]}"; then
      [ -n "$(models_root calibrate)" ] || return 1
      stamp "train did not finish: benchmarking the calibration models ($CAL_EPOCHS epochs) instead"
      epochs=$CAL_EPOCHS; cache=$W/cache-cal
    fi
  fi
  echo "$epochs" > "$W/epochs_benchmarked.txt"

  local s limit; limit=$(limit_for $(( RESERVE_TIMING + RESERVE_PACK )))
  for s in $SCENARIOS; do
    run_stage "bench-$s" "$limit" $CLI benchmark unlearning --preset "$PRESET" --scenario "$s" --cache-dir "$cache" \
        --epochs "$epochs" --output-dir "$W/bench" --methods $METHODS --device "$DEVICE" --no-progress \
        "${overrides[@]}" &
  done
  wait

  local root; root=$(models_root train); [ -n "$root" ] && [ "$cache" = "$W/cache" ] || root=$(models_root calibrate)
  local method=$TIMING_METHOD
  [ -n "$method" ] || method=$($HELPER fastest --results "$W/bench/cat/results.json" --default GA)
  run_stage timing "$(limit_for "$RESERVE_PACK")" $PYTHON "$ROOT/bench/unlearning_time.py" \
      --spm "$root/spm-original-seed0" --parametric "$root/parametric-original-seed0" --preset "$PRESET" \
      --methods "$method" --repeats "$REPEATS" --device "$DEVICE"
}

init_work
main
stamp "main: exit $?"
$HELPER paper-summary --work "$W" --out "$W/summary.md" --json "$W/summary.json"
pack_out "$W/summary.md" "$W/summary.json"
cat "$W/summary.md"

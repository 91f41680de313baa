# Sourced by bench/gpu/paper_scale.sh and bench/gpu/generator.sh: the time box, stage runner, environment
# set-up (carried wheels, data and judge; see bench/gpu/stage.py) and packing of $OUT.
#
# Every stage runs under `timeout` with at most the seconds left in BUDGET (minus what later stages reserve),
# writes its log to $W/logs/<stage>.log and one line to $W/stages.tsv (name, start s, seconds, exit status,
# limit s). Exit status 124/137 means the stage hit its limit; "skipped" that no time was left for it.

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
T0=${T0:-$(date +%s)}
BUDGET=${BUDGET:-540}
DRY_RUN=${DRY_RUN:-0}
CARRY=${CARRY:-outputs/gpu-carry}   # what bench/gpu/stage.py packed (wheels, data, judge), if anything

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
CLI="$PYTHON -m spm_hf.cli"
HELPER="$PYTHON $ROOT/bench/gpu/summarize.py"

now() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(now) )); }
stamp() { echo "[$(now) s] $*" | tee -a "$W/run.log"; }

init_work() {
  mkdir -p "$W/logs" "$OUT"
  : > "$W/stages.tsv"
  : > "$W/run.log"
}

# limit_for RESERVE [CAP]: seconds a stage may run so that RESERVE seconds stay for what follows (capped).
limit_for() {
  local l=$(( $(left) - $1 ))
  if [ $# -ge 2 ] && [ "$2" -lt "$l" ]; then l=$2; fi
  echo $l
}

# run_stage NAME LIMIT CMD...: CMD under `timeout LIMIT`, output to $W/logs/NAME.log; returns CMD's status.
run_stage() {
  local name=$1 limit=$2; shift 2
  local start; start=$(now)
  if [ "$limit" -lt 5 ]; then
    printf '%s\t%s\t0\tskipped\t%s\n' "$name" "$start" "$limit" >> "$W/stages.tsv"
    stamp "$name: skipped (${limit} s left for it)"
    return 125
  fi
  stamp "$name: start (limit ${limit} s)"
  timeout --kill-after=15 "$limit" "$@" > "$W/logs/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$start" "$(( $(now) - start ))" "$rc" "$limit" >> "$W/stages.tsv"
  stamp "$name: exit $rc after $(( $(now) - start )) s"
  if [ "$rc" -ne 0 ]; then tail -5 "$W/logs/$name.log" | sed "s/^/    $name| /"; fi
  return $rc
}

# setup_env: on the device, install the carried wheels and point SPM_HF_DATA / SPM_HF_JUDGE at the carried
# data and judge. Nothing to do where the packages and ../shared exist (the CPU box, DRY_RUN).
setup_env() {
  local carry=$CARRY; case $carry in /*) ;; *) carry=$ROOT/$carry ;; esac
  if ls "$carry"/part*/MANIFEST.json > /dev/null 2>&1; then
    "$PYTHON" "$ROOT/bench/gpu/stage.py" --check --dest "$carry" || return 1
    if ls "$carry"/part*/wheels/*.whl > /dev/null 2>&1; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
          "$carry"/part*/wheels/*.whl || return 1
      # The carried versions win over the image's own (transformers, say); src stays first.
      export PYTHONPATH="$ROOT/src:/tmp/site"
    fi
    local dataset
    for dataset in $(ls -d "$carry"/part*/*/ 2>/dev/null | xargs -n1 basename | sort -u); do
      case $dataset in wheels|judge) continue ;; esac
      mkdir -p "$W/data/$dataset"
      ln -sf "$carry"/part*/"$dataset"/* "$W/data/$dataset/"
      export SPM_HF_DATA="$W/data"
    done
    local judge
    judge=$(ls "$carry"/part*/judge/resnet56.safetensors 2>/dev/null | head -1)
    if [ -n "$judge" ]; then export SPM_HF_JUDGE="$judge"; fi
  fi
  "$PYTHON" - <<'PY'
import importlib.util
missing = [m for m in ("torch", "transformers", "diffusers", "datasets", "accelerate", "safetensors")
           if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"missing packages {missing}: carry them as wheels (python bench/gpu/stage.py)")
PY
}

# pack_out EXTRA_FILE...: results.tgz (everything small under $W the summary names) + the given files, within
# the device's limits on what comes back (8 files, 16 MiB each).
pack_out() {
  nvidia-smi > "$W/nvidia-smi-end.txt" 2>&1 || true
  $HELPER pack --work "$W" --out "$OUT" --loose "$@"
}

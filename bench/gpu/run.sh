#!/usr/bin/env bash
# The GPU run behind the GPU rows of docs/results.md: everything at once on one lent H100/H200, ~9 minutes.
#   1. the unlearning benchmark (cifar10-cpu; scenarios cat and random-10): its 10 classifiers trained 10 at a
#      time, then both scenarios side by side (five-classes and random-50 after them, if time allows);
#   2. the gen-cifar10-cpu generator (the preset's 4,000 steps) and its oracle retrained without "cat";
#   3. the gen-cifar10-paper generator for PAPER_MINUTES of training (fp32, 500 warm-up steps instead of the
#      paper's 19,600, which a few minutes would never leave);
#   4. evaluate-generator on both generators with the judge (no FID there: the Inception weights are not on
#      that machine; images.npz comes back and FID is computed on the CPU box with `--fid-from`).
# Usage: SPM_HF_DATA=... SPM_HF_JUDGE=... OUT=<folder that comes back> bash bench/gpu/run.sh
# Every step writes its log to $WORK; whatever exists at DEADLINE seconds is packed into $OUT.
set -u
W=${WORK:-/root/work}; mkdir -p "$W"
OUT=${OUT:-$W/out}; mkdir -p "$OUT"
PAPER_MINUTES=${PAPER_MINUTES:-4}
DEADLINE=${DEADLINE:-500}
SAMPLES=${SAMPLES:-200}
PY=${PY:-python3 -m spm_hf.cli}
# CPU threads per generator process: left unset, each of the three generator trainings took all 16 cores'
# threads next to 10 benchmark workers, and they crawled (446 steps in 5 minutes in the first GPU run).
GEN_THREADS=${GEN_THREADS:-2}
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

main() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$W/gpu.txt"
  # Decode the parquet files into the datasets cache once, before a dozen processes want it at the same time.
  python3 -c "from spm_hf.data import load_image_dataset; load_image_dataset('cifar10')" > "$W/warm.log" 2>&1
  stamp "data cached"
  OMP_NUM_THREADS=$GEN_THREADS $PY train-generator --preset gen-cifar10-cpu --output-dir "$W/gen-c10" --max-minutes 5 --no-progress \
      > "$W/gen-c10.log" 2>&1 &
  G1=$!
  OMP_NUM_THREADS=$GEN_THREADS $PY train-generator --preset gen-cifar10-cpu --exclude-classes cat --output-dir "$W/gen-c10-nocat" --max-minutes 5 \
      --no-progress > "$W/gen-c10-nocat.log" 2>&1 &
  G2=$!
  OMP_NUM_THREADS=$GEN_THREADS $PY train-generator --preset gen-cifar10-paper --output-dir "$W/gen-paper" --max-minutes "$PAPER_MINUTES" \
      --warmup-steps 500 --eval-every 0 --checkpoint-every 0 --no-progress \
      > "$W/gen-paper.log" 2>&1 &
  G3=$!
  $PY benchmark unlearning --preset cifar10-cpu --scenario cat random-10 --cache-dir "$W/cache" --workers 10 \
      --train-only --no-progress > "$W/bench-train.log" 2>&1
  stamp "benchmark models trained (rc $?)"
  for s in cat random-10; do
    $PY benchmark unlearning --preset cifar10-cpu --scenario $s --cache-dir "$W/cache" --output-dir "$W/bench" \
        --no-progress > "$W/bench-$s.log" 2>&1 &
  done
  # If time allows: the other two scenarios (8 more models), packed only if they finish before the deadline.
  $PY benchmark unlearning --preset cifar10-cpu --scenario five-classes random-50 --cache-dir "$W/cache" \
      --output-dir "$W/bench" --workers 8 --no-progress > "$W/bench-more.log" 2>&1 &
  wait $G1 $G2
  stamp "cifar10-cpu generators trained"
  OMP_NUM_THREADS=$GEN_THREADS $PY evaluate-generator --model "$W/gen-c10" --output-dir "$W/eval-c10" --forget cat \
      --retrained-model "$W/gen-c10-nocat" --samples-per-class "$SAMPLES" --no-fid > "$W/eval-c10.log" 2>&1
  stamp "cifar10-cpu evaluated"
  wait $G3
  stamp "cifar10-paper generator trained"
  OMP_NUM_THREADS=$GEN_THREADS $PY evaluate-generator --model "$W/gen-paper" --output-dir "$W/eval-paper" --samples-per-class "$SAMPLES" \
      --no-fid > "$W/eval-paper.log" 2>&1
  stamp "cifar10-paper evaluated"
  wait
  stamp "all done"
}

main > "$W/run.log" 2>&1 &
MAIN=$!
while kill -0 $MAIN 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt "$DEADLINE" ]; do sleep 5; done
stamp "packing (main still running: $(kill -0 $MAIN 2>/dev/null && echo yes || echo no))" >> "$W/run.log"
nvidia-smi > "$W/nvidia-smi-end.txt" 2>&1
cd "$W"
tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='*.npz' --exclude='checkpoints' \
    --exclude='sample_memory*' --exclude='memory' *.log *.txt bench eval-* gen-*/train_log.jsonl gen-*/samples \
    gen-*/*.json cache/*/*/training_summary.json 2>/dev/null
for e in c10 paper; do [ -f "eval-$e/images.npz" ] && cp "eval-$e/images.npz" "$OUT/images-$e.npz"; done
# The cifar10-cpu generator's EMA UNet (the app's CIFAR-10 pair); its memory is rebuilt from the data there.
[ -d gen-c10/unet ] && tar cf "$OUT/gen-c10-unet.tar" gen-c10/unet gen-c10/scheduler gen-c10/model_index.json
ls -la "$OUT"
tail -40 "$W/run.log"

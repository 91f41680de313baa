#!/usr/bin/env bash
# A one-minute check of every CUDA code path the GPU run uses, on tiny models (run before bench/gpu/run.sh).
# Needs SPM_HF_DATA (a cifar10 folder; a few shards are enough) and SPM_HF_JUDGE. Writes to $WORK (default /tmp/smoke).
set -eu
W=${WORK:-/tmp/smoke}; rm -rf "$W"; mkdir -p "$W"
PY="python3 -m spm_hf.cli"
python3 - <<'PY'
import datasets, diffusers, pyarrow, torch, transformers
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("transformers", transformers.__version__, "diffusers", diffusers.__version__, "datasets", datasets.__version__, "pyarrow", pyarrow.__version__)
PY
$PY benchmark unlearning --preset tiny --scenario cat --epochs 1 --max-train-samples 300 --max-test-samples 100 \
    --workers 2 --cache-dir "$W/cache" --output-dir "$W/bench" --no-progress 2>&1 | grep -E "checks|wrote|Error|error" || true
test -f "$W/bench/cat/results.json"
$PY train-generator --preset gen-tiny --dataset cifar10 --output-dir "$W/gen" --max-steps 3 --max-train-samples 200 \
    --mixed-precision bf16 --no-progress 2>&1 | tail -2
$PY train-generator --preset gen-tiny --dataset cifar10 --exclude-classes cat --output-dir "$W/gen-nocat" --max-steps 3 \
    --max-train-samples 200 --no-progress 2>&1 | tail -1
$PY evaluate-generator --model "$W/gen" --output-dir "$W/eval" --forget cat --retrained-model "$W/gen-nocat" --no-fid \
    --samples-per-class 2 --steps 3 > "$W/eval.log" 2>&1 || { tail -30 "$W/eval.log"; exit 1; }
ls "$W/eval"
echo SMOKE OK

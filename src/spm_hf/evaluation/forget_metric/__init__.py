# The `evaluate` module lives in forget_metric.py; load it with
# `evaluate.load(spm_hf.evaluation.FORGET_METRIC_PATH)` rather than importing it (it needs `evaluate`).

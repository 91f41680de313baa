"""Evaluation of unlearning: metrics (UA / FA / RA / TA, MIA-efficacy, prediction gap, Avg. Gap).

The same functions are exposed as a Hugging Face `evaluate` module (needs `pip install evaluate==0.4.6`):

    import evaluate
    from spm_hf.evaluation import FORGET_METRIC_PATH
    metric = evaluate.load(FORGET_METRIC_PATH)
"""

import os

from .metrics import (
    AVG_GAP_KEYS,
    LOG_PROB_FLOOR,
    MIA_SVC_PARAMS,
    PredictionGap,
    accuracy,
    avg_gap,
    forget_accuracy,
    log_probs,
    mia_efficacy,
    per_split_gap,
    predict_logprobs,
    prediction_gap,
    retain_accuracy,
    test_accuracy,
    true_class_probability,
    unlearning_accuracy,
    unlearning_metrics,
)


# Folder of the `evaluate` metric module (pass it to `evaluate.load`).
FORGET_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forget_metric")

__all__ = [
    "AVG_GAP_KEYS",
    "FORGET_METRIC_PATH",
    "LOG_PROB_FLOOR",
    "MIA_SVC_PARAMS",
    "PredictionGap",
    "accuracy",
    "avg_gap",
    "forget_accuracy",
    "log_probs",
    "mia_efficacy",
    "per_split_gap",
    "predict_logprobs",
    "prediction_gap",
    "retain_accuracy",
    "test_accuracy",
    "true_class_probability",
    "unlearning_accuracy",
    "unlearning_metrics",
]

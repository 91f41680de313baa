"""Evaluation of unlearning: metrics (UA / FA / RA / TA, MIA-efficacy, prediction gap, Avg. Gap).

The same functions are exposed as a Hugging Face `evaluate` module (needs `pip install evaluate==0.4.6`):

    import evaluate
    from spm_hf.evaluation import FORGET_METRIC_PATH
    metric = evaluate.load(FORGET_METRIC_PATH)
"""

import os

from . import metrics
from .metrics import *  # noqa: F403  (the public names are metrics.__all__)


# Folder of the `evaluate` metric module (pass it to `evaluate.load`).
FORGET_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forget_metric")

__all__ = ["FORGET_METRIC_PATH", *metrics.__all__]

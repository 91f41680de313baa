# Hugging Face `evaluate` module for machine-unlearning metrics (UA / FA / RA / TA / MIA, prediction gap).
# Load it offline with `evaluate.load(spm_hf.evaluation.FORGET_METRIC_PATH)`; needs `pip install evaluate==0.4.6`.
# evaluate scans this file's imports with a regex: keep one import per line.
import datasets
import evaluate
import numpy as np
from spm_hf.evaluation import metrics as M


_DESCRIPTION = """
Machine-unlearning metrics in the SalUn / l1-sparse conventions (see spm_hf.evaluation.metrics):
UA = 100 - accuracy on the forget set, FA = accuracy on the forget set, RA = accuracy on the retain set,
TA = accuracy on the test set, MIA = SalUn SVC "confidence" MIA-efficacy (% of forget samples predicted
non-member). With the "with_oracle" config it also gives the prediction gap to a retrained oracle
(PG_H = % argmax disagreement, PG_S = mean KL(p_oracle || p_model) in nats) per split, the oracle's own
UA / FA / RA / TA / MIA and SalUn's Avg. Gap. All values are percentages except PG_S.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per sample, the model's logits or log-probabilities over the
        classes (-inf allowed: probability 0, as an SPM gives a class deleted from its memory).
    references (`list` of `int`): per sample, the true class index.
    splits (`list` of `str`): per sample, "forget", "retain" or "test".
    oracle_predictions (`list` of `list` of `float`, config "with_oracle" only): per sample, the retrained
        oracle's logits or log-probabilities.
    seed (`int`, defaults to 0): seed of the MIA shadow-member subset.
    floor (`float`, defaults to log(1e-8)): clamp for log p_model in PG_S where the oracle has mass.
Returns:
    UA, FA (need "forget"), RA (need "retain"), TA (need "test"), MIA (needs all three);
    with "with_oracle": oracle_UA ... oracle_MIA, avg_gap (when all four are there), and for each split
    present PG_H_<split> and PG_S_<split>, plus PG_H_mean / PG_S_mean / PG_H_harmonic / PG_S_harmonic.
Examples:
    >>> import evaluate
    >>> from spm_hf.evaluation import FORGET_METRIC_PATH
    >>> metric = evaluate.load(FORGET_METRIC_PATH)
    >>> metric.compute(predictions=[[0.0, -1.0], [-1.0, 0.0]], references=[0, 0], splits=["forget", "test"])["UA"]
    0.0
"""

_CITATION = """
@inproceedings{fan2024salun,
  title={SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation},
  author={Fan, Chongyu and Liu, Jiancheng and Zhang, Yihua and Wong, Eric and Wei, Dennis and Liu, Sijia},
  booktitle={International Conference on Learning Representations},
  year={2024}
}
@inproceedings{zheng2026designing,
  title={Designing to Forget: Deep Semi-parametric Models for Unlearning},
  author={Zheng, Amber Yijia and Tai, Yu-Shan and Yeh, Raymond A.},
  booktitle={CVPR},
  year={2026}
}
"""

SPLITS = ("forget", "retain", "test")


def _features(with_oracle):
    features = {
        "predictions": datasets.Sequence(datasets.Value("float32")),
        "references": datasets.Value("int64"),
        "splits": datasets.Value("string"),
    }
    if with_oracle:
        features["oracle_predictions"] = datasets.Sequence(datasets.Value("float32"))
    return datasets.Features(features)


def _split_metrics(scores, labels, splits, seed):
    out = {}
    parts = {s: (scores[splits == s], labels[splits == s]) for s in SPLITS if (splits == s).any()}
    if "forget" in parts:
        out["FA"] = M.forget_accuracy(*parts["forget"])
        out["UA"] = 100.0 - out["FA"]
    if "retain" in parts:
        out["RA"] = M.retain_accuracy(*parts["retain"])
    if "test" in parts:
        out["TA"] = M.test_accuracy(*parts["test"])
    if len(parts) == 3:
        out["MIA"] = M.mia_efficacy(
            M.true_class_probability(*parts["retain"]),
            M.true_class_probability(*parts["test"]),
            M.true_class_probability(*parts["forget"]),
            seed=seed,
        )
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ForgetMetric(evaluate.Metric):
    """UA / FA / RA / TA / MIA-efficacy and, with the "with_oracle" config, the gap to a retrained oracle."""

    def _info(self):
        if self.config_name not in ("default", "with_oracle"):
            raise KeyError(f'config_name must be "default" or "with_oracle", got {self.config_name!r}')
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_features(self.config_name == "with_oracle"),
            reference_urls=[
                "https://arxiv.org/abs/2310.12508",
                "https://github.com/OPTML-Group/Unlearn-Saliency",
                "https://arxiv.org/abs/2603.22870",
            ],
        )

    def _compute(self, predictions, references, splits, oracle_predictions=None, seed=0, floor=M.LOG_PROB_FLOOR):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        splits = np.asarray(splits, dtype=object)
        unknown = sorted(set(splits.tolist()) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split names {unknown}; use {list(SPLITS)}")
        out = _split_metrics(scores, labels, splits, seed)
        if oracle_predictions is None:
            return out
        oracle = np.asarray(oracle_predictions, dtype=np.float64)
        oracle_metrics = _split_metrics(oracle, labels, splits, seed)
        out.update({f"oracle_{k}": v for k, v in oracle_metrics.items()})
        if all(k in out and k in oracle_metrics for k in M.AVG_GAP_KEYS):
            out["avg_gap"] = M.avg_gap(out, oracle_metrics)
        present = [s for s in SPLITS if (splits == s).any()]
        gaps = M.per_split_gap(
            {s: scores[splits == s] for s in present}, {s: oracle[splits == s] for s in present}, floor=floor
        )
        for name, gap in gaps.items():
            out[f"PG_H_{name}"] = gap["hard"]
            out[f"PG_S_{name}"] = gap["soft"]
        return out

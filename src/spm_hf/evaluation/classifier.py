"""Classifier accuracy on uint8 images: used by training reports, the quickstart, the benchmark and the judge."""

from __future__ import annotations

import torch

from ..image_processing_spm import normalize_uint8


@torch.no_grad()
def predict_uint8(model, images: torch.Tensor, processor, batch_size: int = 500) -> torch.Tensor:
    """(N,) predicted class indices for (N, C, H, W) uint8 images, normalised by `processor`, model in eval mode."""
    model.eval()
    predictions = [
        model(normalize_uint8(images[start : start + batch_size], processor).to(model.device)).logits.argmax(-1).cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def evaluate_classifier(model, images: torch.Tensor, labels: torch.Tensor, processor, batch_size: int = 500) -> dict:
    """Accuracy (%) overall and per class on uint8 images (no augmentation), model in eval mode."""
    predictions = predict_uint8(model, images, processor, batch_size)
    correct = predictions == labels
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    per_class = {
        name: round(100.0 * correct[labels == c].float().mean().item(), 2) if (labels == c).any() else None
        for c, name in enumerate(names)
    }
    return {"accuracy": round(100.0 * correct.float().mean().item(), 2), "per_class": per_class}


__all__ = ["evaluate_classifier", "predict_uint8"]

"""The parametric baseline: the SPM's encoder with an ordinary linear head (no memory).

Same config class as the SPM (`SPMConfig`; the memory fields are ignored), same encoder, same data and
training recipe, so accuracy and unlearning comparisons isolate the semi-parametric part.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from ..configuration_spm import SPMConfig
from ..modeling_spm import CifarResNetEncoder, SPMPreTrainedModel


class ParametricForImageClassification(SPMPreTrainedModel):
    """Encoder + Linear(D, num_labels). `logits` are raw scores (not log-probabilities)."""

    def __init__(self, config: SPMConfig):
        super().__init__(config)
        self.encoder = CifarResNetEncoder(config.num_channels, config.encoder_depths, config.encoder_widths)
        self.classifier = nn.Linear(config.embed_dim, config.num_labels)
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        """pixel_values (B, C, H, W) -> logits (B, num_labels); `labels` (B,) gives the cross-entropy loss."""
        embeddings = self.encoder(pixel_values)
        logits = self.classifier(embeddings)
        loss = F.cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=(embeddings,) if output_hidden_states else None
        )

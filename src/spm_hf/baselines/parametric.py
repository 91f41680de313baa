"""The parametric baseline: the SPM's encoder with an ordinary linear head (no memory).

Same config class as the SPM (`SPMConfig`; the memory fields are ignored), same encoder, same data and
training recipe, so accuracy and unlearning comparisons isolate the semi-parametric part.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from ..configuration_spm import SPMConfig
from ..files import atomic_directory, reading_directory
from ..image_processing_spm import load_image_processor
from ..modeling_spm import SPMForImageClassification, SPMPreTrainedModel


class ParametricForImageClassification(SPMPreTrainedModel):
    """Encoder + Linear(D, num_labels). `logits` are raw scores (not log-probabilities)."""

    def __init__(self, config: SPMConfig):
        super().__init__(config)
        self._attach_encoder()
        self.classifier = nn.Linear(config.embed_dim, config.num_labels)
        self.image_processor = None  # set by from_pretrained / the training scripts; saved beside the weights
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images, `model.image_processor(images, return_tensors="pt")["pixel_values"]`.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class indices in `[0, ..., config.num_labels - 1]`; gives `loss`, the mean cross-entropy.
            output_hidden_states (`bool`, *optional*):
                Return `hidden_states`, a 1-tuple holding the `(batch_size, config.embed_dim)` embeddings;
                defaults to `config.output_hidden_states`.
            return_dict (`bool`, *optional*):
                Return an `ImageClassifierOutput` (True) or the tuple of its fields that are set (False);
                defaults to `config.return_dict`.

        Returns:
            `ImageClassifierOutput` or `tuple`: `loss` (shape `()`, with `labels`), `logits` (raw scores of shape
            `(batch_size, config.num_labels)`), `hidden_states` (with `output_hidden_states`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        embeddings = self.encoder(pixel_values)
        logits = self.classifier(embeddings)
        loss = None
        if labels is not None:
            self.config.check_problem_type()
            loss = F.cross_entropy(logits, labels.to(logits.device))
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=(embeddings,) if output_hidden_states else None
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------ persistence, as the SPM's folder
    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' `save_pretrained`, plus the attached `image_processor` (as the SPM saves its own),
        written as one step: a reader sees the old folder or the new one (`spm_hf.files.atomic_directory`).
        Entries the save does not write (the user's own files) are kept."""
        if kwargs.get("push_to_hub"):
            raise ValueError(f"use {type(self).__name__}.push_to_hub(repo_id) to upload, not "
                             "save_pretrained(push_to_hub=True)")
        if not kwargs.get("is_main_process", True):
            return
        with atomic_directory(os.fspath(save_directory), owned=SPMForImageClassification.owned_files) as staging:
            super().save_pretrained(staging, *args, **kwargs)
            processor = getattr(self, "image_processor", None)
            if processor is not None:
                processor.save_pretrained(staging)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load weights + config, and the image processor saved beside them (`image_processor`, None if
        there is none); with `output_loading_info=True`, `(model, loading_info)` as transformers returns."""
        hub_kwargs = {
            k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "subfolder") if k in kwargs
        }
        if pretrained_model_name_or_path is None:  # a state_dict and a config, nothing to read beside them
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        with reading_directory(pretrained_model_name_or_path):
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            model = loaded[0] if kwargs.get("output_loading_info") else loaded
            try:
                model.image_processor = load_image_processor(pretrained_model_name_or_path, **hub_kwargs)
            except OSError:
                model.image_processor = None
        return loaded

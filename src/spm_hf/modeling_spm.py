"""SPM image classifier: a CIFAR ResNet encoder, a pairwise-relation fusion head and a sample memory.

p(y = c | x, T) = sum_e gate_e(x) * softmax_{c in labels(T)} <W_q^e f(x), W_s^e mu_c(T)> / sqrt(H)

where mu_c(T) is a prototype of class c built from the memory T (paper-spec §2.1). Deleting samples from
T changes the prediction with no parameter update. A class with nothing left gets probability exactly 0.

Deviations from the authors' code (paper-spec §8), on purpose:
- `logits` are log-probabilities with `-inf` for classes absent from the memory (probability exactly 0),
  not `log(clamp(p, 1e-8))`.
- with `num_experts == 1` no gate is built (the authors' gate is identically 1 and never trained); the
  unused `bias` / `linear_out` parameters are not built either.
- `knn` mode forms prototypes inside each query's own neighbourhood; the authors' test_step mixes the
  neighbours of every query in the batch.
- the memory is encoded without augmentation, in eval mode.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoImageProcessor, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import logging

from .configuration_spm import SPMConfig
from .files import write_json
from .image_processing_spm import images_to_tensor
from .memory import MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME, MemoryShapeError, SampleMemory


logger = logging.get_logger(__name__)


@dataclass
class SPMImageClassifierOutput(ImageClassifierOutput):
    """`ImageClassifierOutput` plus the query embeddings.

    Args:
        loss: (1,) NLL of `labels` under `logits`, when labels are given.
        logits: (B, num_labels) log-probabilities; `-inf` where a class has no prototype.
        embeddings: (B, D) encoder embeddings of the queries.
        neighbor_rows: (B, k) memory rows used per query in `knn` mode.
    """

    embeddings: torch.FloatTensor | None = None
    neighbor_rows: torch.LongTensor | None = None


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class CifarResNetEncoder(nn.Module):
    """CIFAR ResNet (kuangliu style): 3x3 stem, no max-pool, stages of BasicBlocks, global average pool.

    (B, C_in, H, W) -> (B, widths[-1]).
    """

    def __init__(self, num_channels: int, depths: list[int], widths: list[int]):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(num_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, in_channels = [], widths[0]
        for stage, (depth, width) in enumerate(zip(depths, widths)):
            for i in range(depth):
                blocks.append(BasicBlock(in_channels, width, 2 if (stage > 0 and i == 0) else 1))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(pixel_values)).mean(dim=(2, 3))


class PairwiseRelationFusion(nn.Module):
    """Mixture of pairwise-relation experts over class prototypes (paper-spec §2.1).

    Each expert scores a query against each prototype with a scaled dot product of bias-free
    projections (`similarity="dot"`, the paper's) or their cosine (`"cosine"`), times a learned logit
    scale; the softmax runs over the classes present only. With several experts a gate over
    [query; mean of present prototypes] mixes the experts' distributions.
    """

    def __init__(self, embed_dim: int, hidden_dim: int, num_experts: int, similarity: str = "dot"):
        super().__init__()
        self.num_experts, self.hidden_dim, self.similarity = num_experts, hidden_dim, similarity
        self.query_proj = nn.Linear(embed_dim, num_experts * hidden_dim, bias=False)
        self.prototype_proj = nn.Linear(embed_dim, num_experts * hidden_dim, bias=False)
        self.gate = nn.Linear(2 * embed_dim, num_experts) if num_experts > 1 else None
        # log of a learned logit scale; for "cosine" it starts at log(10) (see _init_weights)
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """query (B, D); prototypes (C, D) shared or (B, C, D) per query; present (C,) or (B, C) bool.

        Returns (B, C) log-probabilities, `-inf` where a class is not present.
        """
        batch, experts, hidden = query.shape[0], self.num_experts, self.hidden_dim
        q = self.query_proj(query).view(batch, experts, hidden)
        if prototypes.dim() == 2:
            s = self.prototype_proj(prototypes).view(-1, experts, hidden)
            present = present.unsqueeze(0).expand(batch, -1)
        else:
            s = self.prototype_proj(prototypes).view(batch, -1, experts, hidden)
        if self.similarity == "cosine":
            q, s = F.normalize(q, dim=-1), F.normalize(s, dim=-1)
            scale = self.logit_scale.exp()
        else:
            scale = self.logit_scale.exp() / math.sqrt(hidden)
        equation = "beh,ceh->bec" if s.dim() == 3 else "beh,bceh->bec"
        scores = torch.einsum(equation, q, s) * scale
        absent = ~present
        probs = torch.softmax(scores.masked_fill(absent.unsqueeze(1), float("-inf")), dim=-1)  # (B, E, C)
        if self.gate is not None:
            weights = present.to(prototypes.dtype)
            if prototypes.dim() == 2:
                context = (weights @ prototypes) / weights.sum(1, keepdim=True)
            else:
                context = torch.einsum("bc,bcd->bd", weights, prototypes) / weights.sum(1, keepdim=True)
            gate = torch.softmax(self.gate(torch.cat([query, context], dim=-1)), dim=-1)  # (B, E)
            probs = (gate.unsqueeze(-1) * probs).sum(1)
        else:
            probs = probs[:, 0]
        # masked_fill (not log(0)) keeps gradients finite for the absent classes.
        return torch.log(probs.clamp_min(1e-30)).masked_fill(absent, float("-inf"))


def class_prototypes(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of a support set. embeddings (N, D), labels (N,) -> (C, D) means, (C,) present."""
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums = sums.index_add(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=num_classes)
    return sums / counts.clamp_min(1).unsqueeze(1).to(embeddings.dtype), counts > 0


def leave_one_out_prototypes(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes from the batch itself with each query's own sample left out.

    embeddings (B, D), labels (B,) -> (B, C, D) per-query means, (B, C) present. The cheap episodic
    variant: no separate support forward, and a query never sees itself.
    """
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums = sums.index_add(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=num_classes)
    own = F.one_hot(labels, num_classes).to(embeddings.dtype)  # (B, C)
    per_query_sums = sums.unsqueeze(0) - own.unsqueeze(-1) * embeddings.unsqueeze(1)
    per_query_counts = counts.unsqueeze(0) - own.long()
    prototypes = per_query_sums / per_query_counts.clamp_min(1).unsqueeze(-1).to(embeddings.dtype)
    return prototypes, per_query_counts > 0


def neighbourhood_prototypes(
    neighbor_values: torch.Tensor, neighbor_labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query class means inside each query's own neighbourhood.

    neighbor_values (B, k, D), neighbor_labels (B, k) -> (B, C, D) means, (B, C) present.
    """
    one_hot = F.one_hot(neighbor_labels, num_classes).to(neighbor_values.dtype)  # (B, k, C)
    sums = torch.einsum("bkc,bkd->bcd", one_hot, neighbor_values)
    counts = one_hot.sum(1)
    return sums / counts.clamp_min(1).unsqueeze(-1), counts > 0


class SPMPreTrainedModel(PreTrainedModel):
    config_class = SPMConfig
    accepts_loss_kwargs = False  # the loss is a plain mean: Trainer must not rescale it
    base_model_prefix = "spm"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                nn.init.zeros_(module.running_mean)
                nn.init.ones_(module.running_var)
                nn.init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, PairwiseRelationFusion):
            nn.init.constant_(module.logit_scale, math.log(10.0) if module.similarity == "cosine" else 0.0)

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, C, H, W) -> (N, D) embeddings in eval mode, batched."""
        was_training = self.training
        self.eval()
        try:
            chunks = [
                self.encoder(pixel_values[i : i + batch_size].to(self.device))
                for i in range(0, pixel_values.shape[0], batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0, self.config.embed_dim, device=self.device)


class SPMForImageClassification(SPMPreTrainedModel):
    """Semi-parametric image classifier whose predictions read `self.memory`.

    Inputs:
        pixel_values: (B, C, H, W) normalised images.
        labels: (B,) class indices, optional; gives `loss` (NLL).
        support_pixel_values / support_labels: (S, C, H, W) / (S,) an explicit support set (episodic
            training); prototypes are its class means and the memory is not read.
        support_embeddings: (S, D) precomputed support embeddings, with `support_labels`.
        leave_one_out: use the batch itself as support, each query's own sample left out (needs labels).
    """

    def __init__(self, config: SPMConfig):
        super().__init__(config)
        self.encoder = CifarResNetEncoder(config.num_channels, config.encoder_depths, config.encoder_widths)
        self.fusion = PairwiseRelationFusion(
            config.embed_dim, config.fusion_hidden_dim, config.num_experts, config.fusion_similarity
        )
        # The memory is not an nn.Module and not in the state dict: it is saved beside the weights.
        self.memory: SampleMemory | None = None
        self.image_processor = None  # set by from_pretrained / the training scripts; saved beside the weights
        self.post_init()

    # ------------------------------------------------------------------ memory plumbing
    @property
    def label_names(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

    def set_memory(self, memory: SampleMemory | None) -> None:
        """Attach a memory; raises `MemoryShapeError` if its values or classes do not fit the model."""
        if memory is not None:
            if memory.value_shape != (self.config.embed_dim,) or memory.dtype.is_floating_point is False:
                raise MemoryShapeError(
                    f"memory values have shape {memory.value_shape} ({memory.dtype}); this model needs "
                    f"float embeddings of shape ({self.config.embed_dim},)"
                )
            if memory.label_names != self.label_names:
                raise MemoryShapeError(
                    f"memory classes {memory.label_names} differ from the model's {self.label_names}"
                )
            memory.to(self.device)
        self.memory = memory

    def _apply(self, fn, *args, **kwargs):
        # Keep the memory on the parameters' device when the model moves.
        result = super()._apply(fn, *args, **kwargs)
        if getattr(self, "memory", None) is not None:
            param = next(self.parameters(), None)
            if param is not None and param.device.type != "meta":
                self.memory.to(param.device)
        return result

    def forget(self, ids=None, classes=None):
        """Delete samples (ids) or whole classes (names or indices) from the memory. Returns the receipt."""
        if self.memory is None:
            raise RuntimeError("this model has no sample memory; call build_memory() or set_memory() first")
        return self.memory.forget(ids=ids, classes=classes)

    @torch.no_grad()
    def build_memory(
        self,
        dataset,
        image_processor=None,
        batch_size: int = 256,
        image_column: str | None = None,
        label_column: str = "label",
        id_column: str | None = "sample_id",
        trained_on: bool | torch.Tensor = True,
        show_progress: bool = True,
    ) -> SampleMemory:
        """Encode every sample of a `datasets.Dataset` (no augmentation, eval mode) into a new memory.

        The image column is `image_column` or the first of `image` / `img` / `pixel_values`; ids come from
        `id_column` (the row number, zero-padded, when the dataset has none). `trained_on` is one flag or
        one per row (False for samples the parameters never saw). Returns and attaches the memory.
        """
        from transformers.utils.logging import tqdm

        if image_processor is None:
            image_processor = getattr(self, "image_processor", None)
        columns = dataset.column_names
        if image_column is None:
            image_column = next((c for c in ("image", "img", "pixel_values") if c in columns), None)
            if image_column is None:
                raise ValueError(f"no image column found among {columns}; pass image_column=")
        if label_column not in columns:
            raise ValueError(f"label column {label_column!r} not found among {columns}")
        memory = SampleMemory(self.label_names, (self.config.embed_dim,), torch.float32)
        n = len(dataset)
        with tqdm(total=n, desc="Encoding memory", unit="img", disable=not show_progress) as bar:
            for start in range(0, n, batch_size):
                batch = dataset[start : start + batch_size]
                images = batch[image_column]
                if isinstance(images, torch.Tensor) and images.is_floating_point():
                    pixel_values = images
                elif image_processor is not None:
                    pixel_values = images_to_tensor(image_processor, images)
                else:
                    raise ValueError("build_memory needs an image_processor for raw images")
                ids = batch[id_column] if id_column and id_column in columns else [
                    f"{i:05d}" for i in range(start, start + len(images))
                ]
                flags = trained_on if isinstance(trained_on, bool) else trained_on[start : start + len(ids)]
                memory.add(ids, batch[label_column], self.encode(pixel_values).cpu(), trained_on=flags)
                bar.update(len(ids))
        self.set_memory(memory)
        return memory

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        support_pixel_values: torch.Tensor | None = None,
        support_labels: torch.Tensor | None = None,
        support_embeddings: torch.Tensor | None = None,
        leave_one_out: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SPMImageClassifierOutput:
        num_classes = self.config.num_labels
        neighbor_rows = None
        if support_pixel_values is not None:
            if support_labels is None:
                raise ValueError("support_pixel_values needs support_labels")
            # One encoder call for queries and support: one set of BatchNorm statistics per step.
            both = self.encoder(torch.cat([pixel_values, support_pixel_values]))
            embeddings, support = both[: pixel_values.shape[0]], both[pixel_values.shape[0] :]
            prototypes, present = class_prototypes(support, support_labels, num_classes)
        else:
            embeddings = self.encoder(pixel_values)
            if support_embeddings is not None:
                if support_labels is None:
                    raise ValueError("support_embeddings needs support_labels")
                prototypes, present = class_prototypes(support_embeddings, support_labels, num_classes)
            elif leave_one_out:
                if labels is None:
                    raise ValueError("leave_one_out=True needs labels")
                prototypes, present = leave_one_out_prototypes(embeddings, labels, num_classes)
            else:
                prototypes, present, neighbor_rows = self._memory_prototypes(embeddings)
        logits = self.fusion(embeddings, prototypes, present)
        loss = None
        if labels is not None:
            loss = F.nll_loss(logits, labels.to(logits.device))
        return SPMImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=(embeddings,) if output_hidden_states else None,
            embeddings=embeddings,
            neighbor_rows=neighbor_rows,
        )

    def _memory_prototypes(self, embeddings: torch.Tensor):
        memory = self.memory
        if memory is None or len(memory) == 0:
            raise RuntimeError(
                "this model has no sample memory to read; call build_memory(dataset) / set_memory(memory), or "
                "pass support_pixel_values / support_embeddings"
            )
        if self.config.memory_mode == "class_mean":
            means, present = memory.class_means()
            return means.to(embeddings), present.to(embeddings.device), None
        _, rows = memory.knn(embeddings.detach(), self.config.knn_k, backend=self.config.knn_backend)
        rows = rows.to(memory.device)
        neighbor_values = memory.values[rows].to(embeddings)  # (B, k, D)
        neighbor_labels = memory.labels[rows].to(embeddings.device)
        prototypes, present = neighbourhood_prototypes(neighbor_values, neighbor_labels, self.config.num_labels)
        return prototypes, present, rows

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights + config (transformers), the image processor if attached, and the memory files."""
        if kwargs.get("push_to_hub"):
            raise ValueError("use model.push_to_hub(repo_id): save_pretrained(push_to_hub=True) would skip the memory")
        model_card = kwargs.pop("model_card", True)  # README.md rendered from the current memory (spm_hf.hub)
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        processor = getattr(self, "image_processor", None)
        if processor is not None:
            processor.save_pretrained(save_directory)
        if self.memory is not None:
            self.memory.save(save_directory)
            if model_card:
                self.write_model_card(save_directory)
        else:  # never leave a stale memory beside weights saved without one
            for name in (MEMORY_WEIGHTS_NAME, MEMORY_CONFIG_NAME):
                path = os.path.join(save_directory, name)
                if os.path.exists(path):
                    os.unlink(path)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load weights + config, then the sample memory and the image processor found beside them."""
        from transformers.utils import cached_file

        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        hub_kwargs = {
            k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "subfolder") if k in kwargs
        }
        paths = [
            cached_file(
                pretrained_model_name_or_path, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs
            )
            for name in (MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME)
        ]
        if all(paths):
            model.set_memory(SampleMemory.from_files(paths[0], paths[1]))
        elif any(paths):
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path} has only one of {MEMORY_CONFIG_NAME} / {MEMORY_WEIGHTS_NAME}"
            )
        try:
            model.image_processor = AutoImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        except OSError:
            model.image_processor = None
        return model

    # ------------------------------------------------------------------ Hub (spm_hf.hub)
    def write_model_card(self, save_directory, repo_id: str | None = None, summary: dict | None = None,
                         card_info: dict | None = None) -> str | None:
        """Render the model card from the current memory and ledger into `save_directory/README.md`.

        The training summary (recipe, metrics) is `summary`, else `self.training_summary`, else the
        `training_summary.json` found in `save_directory` or beside the weights this model was loaded
        from; it is copied into `save_directory` so the next card can find it. `card_info` (else
        `self.card_info`) adds a licence, metrics or the measured gap to retraining (see
        `spm_hf.hub.classifier_card`). Returns the card's path (None if jinja2 is missing).
        """

        from .hub import TRAINING_SUMMARY_NAME, classifier_card, find_sidecar, guess_repo_id, write_card

        save_directory = os.fspath(save_directory)
        summary = summary or getattr(self, "training_summary", None) or find_sidecar(
            TRAINING_SUMMARY_NAME, save_directory, self.name_or_path
        )
        summary_path = os.path.join(save_directory, TRAINING_SUMMARY_NAME)
        if summary and not os.path.exists(summary_path):
            write_json(summary_path, summary)
        card_info = card_info if card_info is not None else getattr(self, "card_info", None)
        try:
            card = classifier_card(
                self, summary=summary, card_info=card_info,
                repo_id=repo_id or guess_repo_id(self.name_or_path, save_directory, card_info),
            )
        except ImportError as e:  # ModelCard.from_template needs jinja2
            logger.warning(f"model card not written ({e}); install jinja2")
            return None
        return write_card(card, save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        squash_history: bool | None = None,
        purge_lfs: bool = True,
        card_info: dict | None = None,
        **save_kwargs,
    ):
        """Save weights, memory, processor, remote code and card to a temporary folder and upload it.

        The repo then holds exactly that folder (remote files it lacks are deleted). If the memory's
        ledger records a forget event, the repo's history is squashed and LFS objects no longer
        referenced are permanently deleted, so no older revision still serves a deleted sample;
        `squash_history=False` skips that and warns. Returns a `spm_hf.hub.PushResult`.
        """
        from .hub import TRAINING_SUMMARY_NAME, find_sidecar, push_saved

        if self.memory is None:
            raise RuntimeError("this model has no sample memory; call build_memory() or set_memory() before pushing")
        # the summary of the checkpoint this model was loaded from (a folder, or a repo id: fetched if needed)
        summary = getattr(self, "training_summary", None) or find_sidecar(
            TRAINING_SUMMARY_NAME, self.name_or_path, allow_network=True, token=token
        )

        def save(folder: str, full_repo_id: str) -> None:
            self.save_pretrained(folder, model_card=False, **save_kwargs)
            self.write_model_card(folder, repo_id=full_repo_id, summary=summary, card_info=card_info)

        return push_saved(
            save, repo_id, memory=self.memory, tmp_prefix="spm-classifier-", squash_history=squash_history,
            purge_lfs=purge_lfs, private=private, token=token, commit_message=commit_message, revision=revision,
        )


__all__ = ["SPMForImageClassification", "SPMPreTrainedModel", "SPMImageClassifierOutput", "CifarResNetEncoder"]

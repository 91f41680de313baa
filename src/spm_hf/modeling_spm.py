"""SPM image classifier: an encoder (a CIFAR ResNet or any transformers vision model), a fusion head
(pairwise relation experts, or the parameter-free cosine to prototypes) and a sample memory.

p(y = c | x, T) = sum_e gate_e(x) * softmax_{c in labels(T)} <W_q^e f(x), W_s^e mu_c(T)> / sqrt(H)

where mu_c(T) is a prototype of class c built from the memory T (docs/method.md). Deleting samples from
T changes the prediction with no parameter update. A class with nothing left gets probability exactly 0.

Deviations from the authors' code, on purpose:
- `logits` are log-probabilities with `-inf` for classes absent from the memory (probability exactly 0),
  not `log(clamp(p, 1e-8))`.
- with `num_experts == 1` no gate is built (the authors' gate is identically 1 and never trained); the
  unused `bias` / `linear_out` parameters are not built either.
- `knn` mode reads each query's own neighbourhood (the authors' test_step mixes the neighbours of every
  query in the batch), scores every neighbour as a prototype of its own and sums the probabilities per
  class (`neighbour_softmax_log_probs`) instead of averaging each class's neighbours into one prototype,
  which trailed `class_mean` by 20 points; by default that distribution is averaged with `class_mean`
  mode's (`knn_aggregation="class_mean_mixture"`), which on CIFAR-10 reads above both.
- the memory is encoded without augmentation, in eval mode.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import logging

from .configuration_spm import SPMConfig
from .files import reading_directory
from .hub import SPMHubMixin
from .image_processing_spm import images_to_tensor, load_image_processor
from .memory import MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME, MemoryShapeError, SampleMemory, squared_distances


logger = logging.get_logger(__name__)


@dataclass
class SPMImageClassifierOutput(ImageClassifierOutput):
    """`ImageClassifierOutput` plus the query embeddings.

    Args:
        loss: () NLL of `labels` under `logits`, averaged over the samples `loss_mask` marks, when labels
            are given.
        logits: (B, num_labels) log-probabilities; `-inf` where a class has no prototype.
        hidden_states: a 1-tuple holding the (B, D) query embeddings, with `output_hidden_states`.
        embeddings: (B, D) encoder embeddings of the queries.
        neighbor_keys: (B, k) stable memory keys (`SampleMemory.keys`) of the entries each query read in
            `knn` mode; `memory.ids_of(keys)` names them. Keys, unlike rows, do not move on a forget.
        loss_mask: (B,) long, when labels are given: 1 where the label's class has a prototype for that
            query, so the sample counts in `loss`; 0 where it has none (a forgotten class, one absent from
            the support set or from a `knn` neighbourhood), whose log-likelihood is -inf.
    """

    embeddings: torch.FloatTensor | None = None
    neighbor_keys: torch.LongTensor | None = None
    loss_mask: torch.LongTensor | None = None


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


class TransformersBackboneEncoder(nn.Module):
    """Any transformers vision model as the encoder: (B, C, H, W) -> (B, D) pooled embeddings.

    Built with `AutoModel.from_config(config.backbone_config)`, or `AutoModel.from_pretrained(config.backbone)`
    with `use_pretrained_backbone`. The base model's pooled output is what an SPM needs: one vector per
    image to compare with the memory. `AutoBackbone` / `load_backbone` would give multi-scale feature maps
    instead, and ViT and DINOv2 have no backbone class that returns their pooled token, so the pooling
    would have to be rebuilt here per architecture. `config.backbone_pooling` picks `pooler_output`
    (flattened: ResNet pools to (B, C, 1, 1)), the mean of `last_hidden_state` over tokens or positions,
    or its first (CLS) token. A ViT checkpoint saved without pooler weights (those of
    `ViTForImageClassification`) gets a freshly initialised pooler: use `"cls"` or `"mean"` for it when the
    encoder is frozen.
    """

    def __init__(self, config: SPMConfig):
        super().__init__()
        self.pooling = config.backbone_pooling
        if config.backbone is not None and config.use_pretrained_backbone:
            self.model = AutoModel.from_pretrained(config.backbone, config=config.backbone_config, dtype=torch.float32)
        else:
            self.model = AutoModel.from_config(config.backbone_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = self.model(pixel_values=pixel_values, return_dict=True)
        pooled = getattr(outputs, "pooler_output", None)
        if self.pooling == "pooler" and pooled is not None:
            return pooled.flatten(1)
        hidden = outputs.last_hidden_state
        if hidden.dim() == 4:  # convolutional: (B, C, H, W)
            if self.pooling == "cls":
                raise ValueError("backbone_pooling='cls' needs a token sequence; this backbone returns feature maps")
            return hidden.mean(dim=(2, 3))
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)


def build_encoder(config: SPMConfig) -> nn.Module:
    """The encoder `config` describes: a transformers backbone when it has one, else a CIFAR ResNet."""
    if config.backbone_config is not None:
        return TransformersBackboneEncoder(config)
    return CifarResNetEncoder(config.num_channels, config.encoder_depths, config.encoder_widths)


class CosinePrototypeFusion(nn.Module):
    """Parameter-free fusion: softmax over the present classes of cos(query, prototype) / temperature.

    Nothing in it is trained, so a frozen (e.g. pretrained) encoder with this fusion and a memory is a
    classifier whose parameters never saw the user's data: every memory row is then memory-only.
    """

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Same contract as `PairwiseRelationFusion.forward`: (B, C) log-probabilities, `-inf` if absent."""
        q = F.normalize(query, dim=-1)
        s = F.normalize(prototypes, dim=-1)
        if prototypes.dim() == 2:
            scores = q @ s.T
            present = present.unsqueeze(0).expand(query.shape[0], -1)
        else:
            scores = torch.einsum("bd,bcd->bc", q, s)
        scores = (scores / self.temperature).masked_fill(~present, float("-inf"))
        return torch.log_softmax(scores, dim=-1).masked_fill(~present, float("-inf"))


def build_fusion(config: SPMConfig) -> nn.Module:
    if config.fusion == "cosine_prototype":
        return CosinePrototypeFusion(config.fusion_temperature)
    return PairwiseRelationFusion(config.embed_dim, config.fusion_hidden_dim, config.num_experts,
                                  config.fusion_similarity)


class PairwiseRelationFusion(nn.Module):
    """Mixture of pairwise-relation experts over class prototypes.

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


def leave_one_out_neighbours(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """(B, min(k, B - 1)) indices of each row's nearest other rows of `embeddings` (B, D), nearest first, by
    squared L2 as the memory's search; a row is never its own neighbour. The choice carries no gradient."""
    with torch.no_grad():
        flat = embeddings.detach().float()
        distances = squared_distances(flat, flat)
        distances.fill_diagonal_(float("inf"))
        return distances.topk(min(k, embeddings.shape[0] - 1), dim=1, largest=False).indices


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


def neighbour_softmax_log_probs(
    fusion: nn.Module, query: torch.Tensor, neighbor_values: torch.Tensor, neighbor_labels: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """`knn` mode's class log-probabilities: each of a query's k neighbours is a prototype of its own,
    the fusion spreads the query's probability over the k of them, and a class gets the sum over its
    neighbours. query (B, D), neighbor_values (B, k, D), neighbor_labels (B, k) -> (B, C); `-inf`
    (probability exactly 0) for a class with no neighbour.

    Class means inside a neighbourhood (`neighbourhood_prototypes`) lose how many neighbours each class
    has: a wrong class's one stray neighbour, nearer the query than the right class's average, then wins.
    Summing per neighbour keeps the count and the closeness both (measured in docs/results.md).
    """
    everyone = torch.ones(neighbor_labels.shape, dtype=torch.bool, device=neighbor_labels.device)
    per_neighbour = fusion(query, neighbor_values, everyone)  # (B, k) log-probabilities over the neighbours
    top = per_neighbour.max(dim=1, keepdim=True).values
    sums = torch.zeros(query.shape[0], num_classes, dtype=per_neighbour.dtype, device=per_neighbour.device)
    sums = sums.scatter_add(1, neighbor_labels, (per_neighbour - top).exp())
    counts = torch.zeros_like(sums).scatter_add(1, neighbor_labels, torch.ones_like(per_neighbour))
    absent = counts == 0
    return (torch.log(sums.clamp_min(1e-30)) + top).masked_fill(absent, float("-inf"))


def nll_over_scorable_labels(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean negative log-likelihood of `labels` (B,) under log-probabilities `logits` (B, C), over the samples
    whose label has a log-probability above -inf; returns `(loss, mask)`, `mask` (B,) 1 for those samples and 0
    for the others (a long tensor, as transformers' attention masks).

    A label whose class has no prototype has log-probability -inf: counting it would make the mean
    infinite (and its gradient NaN), so it is left out; with no sample left the loss is 0.
    """
    target = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    mask = ~torch.isneginf(target)  # NaN stays in: a broken forward must not vanish from the loss
    # torch.where, not boolean indexing: the shapes stay static (torch.compile, export)
    total = torch.where(mask, target, torch.zeros_like(target)).sum()
    return -total / mask.sum().clamp_min(1).to(target.dtype), mask.long()


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

    def _attach_encoder(self) -> None:
        """`self.encoder` as the config describes it (`build_encoder`), frozen with `freeze_encoder`. Loading a
        pretrained backbone makes its weights the model's own: `self.config` then becomes a copy that says
        `use_pretrained_backbone=False`, so a saved folder never fetches the backbone again, while the
        caller's config, which may build further models, still asks for the pretrained weights."""
        self.encoder = build_encoder(self.config)
        if self.config.backbone is not None and self.config.use_pretrained_backbone:
            self.config = copy.deepcopy(self.config)
            self.config.use_pretrained_backbone = False
        self.freeze_encoder_if_configured()

    def freeze_encoder_if_configured(self) -> None:
        """With `config.freeze_encoder`, the encoder's parameters take no gradient. Called on construction and
        by `train()`, since loading weights may hand the model new parameter objects."""
        if getattr(self.config, "freeze_encoder", False) and hasattr(self, "encoder"):
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        # A frozen encoder stays in eval mode: its BatchNorm statistics do not drift and dropout stays off,
        # so training changes nothing the encoder computes.
        super().train(mode)
        if getattr(self.config, "freeze_encoder", False) and hasattr(self, "encoder"):
            self.freeze_encoder_if_configured()
            self.encoder.eval()
        return self

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


class SPMForImageClassification(SPMHubMixin, SPMPreTrainedModel):
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
        self._attach_encoder()
        self.fusion = build_fusion(config)
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

    def forget(self, classes=None, *, ids=None):
        """Delete whole classes (names or indices) and/or samples (`ids=`) from the memory; returns the
        `ForgetReceipt`. `forget(["cat"])` and `forget(classes=["cat"])` forget classes,
        `forget(ids=["train/00042"])` forgets samples: nothing is guessed from the values."""
        if self.memory is None:
            raise RuntimeError("this model has no sample memory; call build_memory() or set_memory() first")
        return self.memory.forget(classes, ids=ids)

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
                memory.add(ids, batch[label_column], self._encode_padded(pixel_values, batch_size), trained_on=flags)
                bar.update(len(ids))
        self.set_memory(memory)
        return memory

    def _encode_padded(self, pixel_values: torch.Tensor, batch_size: int) -> torch.Tensor:
        """(n, C, H, W) -> (n, D) on the CPU, the encoder always called on `batch_size` rows: a short final
        batch is padded with repeats of its own rows. oneDNN chooses its kernels by batch size, so a row
        encoded in a batch of 1 can differ in the last bits from the same row in a batch of 4; the padding
        makes a row's value independent of how many rows the memory has, which exact forgetting needs (a
        memory built without the forgotten rows holds the same bits for every other row). Zero rows would
        not do: in a test they too changed a real row's last bits."""
        n = pixel_values.shape[0]
        if 0 < n < batch_size:
            repeats = torch.arange(batch_size - n, device=pixel_values.device) % n
            pixel_values = torch.cat([pixel_values, pixel_values[repeats]])
        return self.encode(pixel_values)[:n].cpu()

    # ------------------------------------------------------------------ forward
    def _check_pixel_values(self, name: str, pixel_values) -> int:
        """The batch size of `pixel_values`; an error naming `name` unless it is a finite float tensor
        (B >= 1, num_channels, image_size, image_size)."""
        config = self.config
        want = f"(B, {config.num_channels}, {config.image_size}, {config.image_size})"
        how = "convert images with the model's image processor: model.image_processor(images, return_tensors='pt')"
        if pixel_values is None:
            raise ValueError(f"{name} is required: a float tensor {want} of normalised images; {how}")
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"{name} must be a float torch.Tensor {want}, got {type(pixel_values).__name__}; {how}")
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"{name} is a {pixel_values.dtype} tensor; the model reads normalised float pixel values {want}: "
                f"{how} (or spm_hf.image_processing_spm.normalize_uint8 for uint8 batches)"
            )
        shape = tuple(pixel_values.shape)
        if len(shape) != 4 or shape[1:] != (config.num_channels, config.image_size, config.image_size) or not shape[0]:
            hint = "add a batch dimension (pixel_values[None])" if len(shape) == 3 else how
            raise ValueError(
                f"{name} must have shape {want} with B >= 1 (num_channels={config.num_channels}, "
                f"image_size={config.image_size}), got {shape}; {hint}"
            )
        if not torch.compiler.is_compiling():
            if not bool(torch.isfinite(pixel_values).all()):
                bad = int((~torch.isfinite(pixel_values)).sum())
                raise ValueError(f"{name} holds {bad} NaN or infinite values; pixel values must be finite")
        return shape[0]

    def _check_labels(self, name: str, labels, length: int) -> None:
        """An error naming `name` unless `labels` is an integer tensor (length,) of class indices."""
        num_classes = self.config.num_labels
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
            kind = f"a {labels.dtype} tensor" if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise TypeError(f"{name} must be an integer tensor of class indices 0..{num_classes - 1}, got {kind}")
        if tuple(labels.shape) != (length,):
            raise ValueError(f"{name} must have shape ({length},), one class index per image, "
                             f"got {tuple(labels.shape)}")
        outside = (labels < 0) | (labels >= num_classes)
        if bool(outside.any()):  # one reduction; the offending values are gathered only to say them
            raise ValueError(
                f"{name} must be class indices 0..{num_classes - 1}, got {sorted(set(labels[outside].tolist()))[:10]}"
            )

    def _check_forward_inputs(self, pixel_values, labels, support_pixel_values, support_labels, support_embeddings,
                              leave_one_out) -> None:
        """Refuse, before any computation, inputs that would fail deep inside or silently mean nothing."""
        batch = self._check_pixel_values("pixel_values", pixel_values)
        if labels is not None:
            self.config.check_problem_type()  # it may have been set on a loaded model's config
            self._check_labels("labels", labels, batch)
        if support_pixel_values is not None or support_embeddings is not None:
            if support_pixel_values is not None and support_embeddings is not None:
                raise ValueError("pass support_pixel_values or support_embeddings, not both")
            given = "support_pixel_values" if support_pixel_values is not None else "support_embeddings"
            if support_labels is None:
                raise ValueError(f"{given} needs support_labels")
            if support_pixel_values is not None:
                support = self._check_pixel_values("support_pixel_values", support_pixel_values)
            else:
                dim = self.config.embed_dim
                if not isinstance(support_embeddings, torch.Tensor) or not support_embeddings.is_floating_point():
                    raise TypeError(f"support_embeddings must be a float tensor (S, {dim}), got "
                                    f"{getattr(support_embeddings, 'dtype', type(support_embeddings).__name__)}")
                shape = tuple(support_embeddings.shape)
                if len(shape) != 2 or shape[1] != dim or not shape[0]:
                    raise ValueError(f"support_embeddings must have shape (S, {dim}) with S >= 1, got {shape}")
                if not bool(torch.isfinite(support_embeddings).all()):
                    raise ValueError("support_embeddings holds NaN or infinite values")
                support = support_embeddings.shape[0]
            self._check_labels("support_labels", support_labels, support)
        else:  # the memory is read, or the batch as knn mode reads the memory (episode_reading)
            if leave_one_out and labels is None:
                raise ValueError("leave_one_out=True needs labels")
            self.config.check_memory_settings()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        support_pixel_values: torch.Tensor | None = None,
        support_embeddings: torch.Tensor | None = None,
        leave_one_out: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SPMImageClassifierOutput | tuple[torch.Tensor, ...]:
        r"""Classify `pixel_values` against prototypes built from the memory (or from a given support set).

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images, `model.image_processor(images, return_tensors="pt")["pixel_values"]`;
                `num_channels` is `config.num_channels`, `height` and `width` are `config.image_size`.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class indices in `[0, ..., config.num_labels - 1]`. Gives `loss`: the negative log-likelihood,
                averaged over the samples whose class has a prototype (`loss_mask`, below).
            support_pixel_values (`torch.FloatTensor` of shape `(support_size, num_channels, height, width)`,
                *optional*): An explicit support set (episodic training): the prototypes are its class means and
                the memory is not read. Needs `support_labels`.
            support_labels (`torch.LongTensor` of shape `(support_size,)`, *optional*, keyword only):
                Class indices of `support_pixel_values` or `support_embeddings`. Taken from `**kwargs`, not
                named in the signature: `Trainer` treats every parameter whose name holds "label" as a target,
                and would then skip the loss and the labels of every batch without a support set.
            support_embeddings (`torch.FloatTensor` of shape `(support_size, config.embed_dim)`, *optional*):
                Precomputed support embeddings, instead of `support_pixel_values`.
            leave_one_out (`bool`, *optional*, defaults to `False`):
                Use the batch itself as the support set, each query's own sample left out (needs `labels`).
            output_hidden_states (`bool`, *optional*):
                Return `hidden_states`, a 1-tuple holding the query embeddings (the encoder has no per-layer
                sequence states); defaults to `config.output_hidden_states`.
            return_dict (`bool`, *optional*):
                Return an `SPMImageClassifierOutput` (True) or the tuple of its fields that are set, in order
                (False); defaults to `config.return_dict`.

        Returns:
            `SPMImageClassifierOutput`, or a `tuple` of the same fields in this order, those that are `None`
            left out:
            - loss (`torch.FloatTensor` of shape `()`, when `labels` is given): see below.
            - logits (`torch.FloatTensor` of shape `(batch_size, config.num_labels)`): log-probabilities
              (they sum to 1 after `exp`); `-inf`, probability exactly 0, for a class with no prototype.
            - hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states`): `(embeddings,)`.
            - embeddings (`torch.FloatTensor` of shape `(batch_size, config.embed_dim)`): the queries' embeddings.
            - neighbor_keys (`torch.LongTensor` of shape `(batch_size, config.knn_k)`, `knn` mode reading the
              memory): the memory keys each query read.
            - loss_mask (`torch.LongTensor` of shape `(batch_size,)`, when `labels` is given): 1 for the samples
              `loss` averages over, 0 for the others.

        The loss of a sample whose label has no prototype (its class was forgotten, or is absent from the
        support set or the query's `knn` neighbourhood) is infinite: such samples are left out of the mean
        and marked 0 in `loss_mask`, and a batch of only such samples has loss 0 (no gradient). So after
        a forget, `Trainer.evaluate`'s `eval_loss` is the loss on the classes still in memory, while accuracy
        still counts the forgotten classes' samples as misclassified.
        """
        support_labels = kwargs.pop("support_labels", None)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        self._check_forward_inputs(
            pixel_values, labels, support_pixel_values, support_labels, support_embeddings, leave_one_out
        )
        num_classes = self.config.num_labels
        neighbor_keys = logits = None
        if support_pixel_values is not None:
            # One encoder call for queries and support: one set of BatchNorm statistics per step.
            both = self.encoder(torch.cat([pixel_values, support_pixel_values]))
            embeddings, support = both[: pixel_values.shape[0]], both[pixel_values.shape[0] :]
            prototypes, present = class_prototypes(support, support_labels, num_classes)
        else:
            embeddings = self.encoder(pixel_values)
            if support_embeddings is not None:
                prototypes, present = class_prototypes(support_embeddings, support_labels, num_classes)
            elif leave_one_out and self.config.episode_reading == "knn":
                logits = self._leave_one_out_knn_log_probs(embeddings, labels)
            elif leave_one_out:
                prototypes, present = leave_one_out_prototypes(embeddings, labels, num_classes)
            else:
                logits, neighbor_keys = self._memory_log_probs(embeddings)
        if logits is None:
            logits = self.fusion(embeddings, prototypes, present)
        loss = loss_mask = None
        if labels is not None:
            loss, loss_mask = nll_over_scorable_labels(logits, labels.to(logits.device))
        output = SPMImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=(embeddings,) if output_hidden_states else None,
            embeddings=embeddings,
            neighbor_keys=neighbor_keys,
            loss_mask=loss_mask,
        )
        return output if return_dict else output.to_tuple()

    def _memory_log_probs(self, embeddings: torch.Tensor):
        """`(log-probabilities (B, C), neighbour keys (B, k) or None)` of queries read against the memory."""
        memory = self.memory
        if memory is None or len(memory) == 0:
            raise RuntimeError(
                "this model has no sample memory to read; call build_memory(dataset) / set_memory(memory), or "
                "pass support_pixel_values / support_embeddings"
            )
        if self.config.memory_mode == "class_mean":
            return self._class_mean_log_probs(memory, embeddings), None
        # One locked read: a forget in another thread cannot remove an entry between search and gather, nor
        # between the neighbours and the class means of the mixture.
        with memory.reading():
            neighbours = memory.nearest(embeddings.detach(), self.config.knn_k, backend=self.config.knn_backend)
            class_mean = (self._class_mean_log_probs(memory, embeddings)
                          if self.config.knn_aggregation == "class_mean_mixture" else None)
        neighbor_values = neighbours.values.to(embeddings)  # (B, k, D)
        neighbor_labels = neighbours.labels.to(embeddings.device)
        return self._knn_log_probs(embeddings, neighbor_values, neighbor_labels, class_mean), neighbours.keys

    def _knn_log_probs(self, embeddings, neighbor_values, neighbor_labels, class_mean):
        """`knn` mode's (B, C) log-probabilities from each query's neighbours (B, k, D) / (B, k), read as
        `config.knn_aggregation` says; `class_mean` (B, C) is `class_mean` mode's for the mixture, else None."""
        if self.config.knn_aggregation == "neighbourhood_means":
            prototypes, present = neighbourhood_prototypes(neighbor_values, neighbor_labels, self.config.num_labels)
            return self.fusion(embeddings, prototypes, present)
        local = neighbour_softmax_log_probs(self.fusion, embeddings, neighbor_values, neighbor_labels,
                                            self.config.num_labels)
        if class_mean is not None:  # p = (p_class_mean + p_neighbours) / 2
            return torch.logsumexp(torch.stack([class_mean, local]), dim=0) - math.log(2.0)
        return local

    def _leave_one_out_knn_log_probs(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training in `knn` mode (`episode_reading="knn"`): each query read against its `knn_k` nearest
        batch-mates, itself left out, as `knn` mode reads the memory (and the batch's leave-one-out class
        means for the mixture). embeddings (B, D), labels (B,) -> (B, C); gradients reach the neighbours too."""
        if embeddings.shape[0] < 2:  # nobody else in the batch: no class can be scored (the loss skips it)
            return embeddings.new_full((embeddings.shape[0], self.config.num_labels), float("-inf"))
        neighbour_index = leave_one_out_neighbours(embeddings, self.config.knn_k)
        class_mean = None
        if self.config.knn_aggregation == "class_mean_mixture":
            class_mean = self.fusion(embeddings, *leave_one_out_prototypes(embeddings, labels, self.config.num_labels))
        return self._knn_log_probs(embeddings, embeddings[neighbour_index], labels[neighbour_index], class_mean)

    def _class_mean_log_probs(self, memory: SampleMemory, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C) log-probabilities of `class_mean` mode: the fusion over the memory's class means."""
        means, present = memory.class_means()
        return self.fusion(embeddings, means.to(embeddings), present.to(embeddings.device))

    # ------------------------------------------------------------------ persistence (spm_hf.hub.SPMHubMixin)
    card_kind = "classifier"
    # what a save replaces even where the new folder lacks it: a memory saved without one, old weight shards
    owned_files = (MEMORY_WEIGHTS_NAME, MEMORY_CONFIG_NAME, "model.safetensors", "model-*-of-*.safetensors",
                   "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")

    def _save_files(self, directory: str, *args, **kwargs) -> None:
        """Weights, config and remote code (transformers), the image processor if attached, the memory."""
        super()._save_files(directory, *args, **kwargs)
        processor = getattr(self, "image_processor", None)
        if processor is not None:
            processor.save_pretrained(directory)
        if self.memory is not None:
            self.memory.save(directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load weights + config, then the sample memory and the image processor found beside them.

        A local folder is read as one state, never half of one save and half of the next
        (`spm_hf.files.reading_directory`); what was loaded is remembered for the next save or push
        (`SPMHubMixin.remember_origin`).
        """
        from transformers.utils import CONFIG_NAME, cached_file

        hub_kwargs = {
            k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "subfolder") if k in kwargs
        }
        if pretrained_model_name_or_path is None:  # `config=` and `state_dict=`: no folder, so no memory to read
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        with reading_directory(pretrained_model_name_or_path):
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            loading_info = None
            if kwargs.get("output_loading_info"):  # transformers then returns (model, loading_info)
                model, loading_info = model
            paths = [
                cached_file(
                    pretrained_model_name_or_path, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs
                )
                for name in (MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME, CONFIG_NAME)
            ]
            if all(paths[:2]):
                model.set_memory(SampleMemory.from_files(paths[0], paths[1]))
            elif any(paths[:2]):
                raise FileNotFoundError(
                    f"{pretrained_model_name_or_path} has only one of {MEMORY_CONFIG_NAME} / {MEMORY_WEIGHTS_NAME}"
                )
            try:
                model.image_processor = load_image_processor(pretrained_model_name_or_path, **hub_kwargs)
            except OSError:
                model.image_processor = None
        if paths[2]:
            model.remember_origin(os.path.dirname(paths[2]))
        return model if loading_info is None else (model, loading_info)


__all__ = ["SPMForImageClassification", "SPMPreTrainedModel", "SPMImageClassifierOutput", "CifarResNetEncoder",
           "CosinePrototypeFusion", "PairwiseRelationFusion", "TransformersBackboneEncoder"]

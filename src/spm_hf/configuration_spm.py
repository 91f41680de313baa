"""Configuration of the SPM image classifier (`SPMForImageClassification`)."""

from __future__ import annotations

from transformers import PreTrainedConfig


# CIFAR-style ResNets (3x3 stem, no max-pool, BasicBlocks). `resnet18` is the paper's encoder
# (paper-spec §2.1); `resnet-small` (0.3M parameters) trains on a 2-core CPU; `resnet-mini` is for smoke
# runs and `resnet-tiny` for unit tests.
ENCODER_PRESETS: dict[str, dict[str, list[int]]] = {
    "resnet18": {"depths": [2, 2, 2, 2], "widths": [64, 128, 256, 512]},
    "resnet-small": {"depths": [1, 1, 1], "widths": [32, 64, 128]},
    "resnet-mini": {"depths": [1, 1, 1], "widths": [16, 32, 64]},
    "resnet-tiny": {"depths": [1, 1], "widths": [8, 16]},
}

MEMORY_MODES = ("class_mean", "knn")
KNN_BACKENDS = ("torch", "faiss")


class SPMConfig(PreTrainedConfig):
    r"""Configuration of a semi-parametric image classifier.

    Args:
        encoder (`str`, defaults to `"resnet18"`): a key of `ENCODER_PRESETS`, or `"custom"` with
            `encoder_depths` / `encoder_widths` given.
        encoder_depths (`list[int]`, *optional*): BasicBlocks per stage (overrides the preset).
        encoder_widths (`list[int]`, *optional*): channels per stage; the last is the embedding size.
        num_channels (`int`, defaults to 3): input image channels.
        image_size (`int`, defaults to 32): input height and width.
        fusion_hidden_dim (`int`, *optional*): width of the relation experts' projections
            (defaults to the embedding size, as in the paper).
        num_experts (`int`, defaults to 1): pairwise relation experts mixed by a gate (the paper ships 1,
            in which case no gate is built).
        fusion_similarity (`str`, defaults to `"dot"`): `"dot"` (the paper's scaled dot product of the
            projections) or `"cosine"` (their cosine); either is multiplied by a learned logit scale.
        memory_mode (`str`, defaults to `"class_mean"`): `"class_mean"` (SPM-C: one prototype per class,
            the mean embedding of every sample of that class in memory) or `"knn"` (SPM-R: per query, its
            `knn_k` nearest memory entries, prototypes formed within that neighbourhood).
        knn_k (`int`, defaults to 64): neighbourhood size in `knn` mode.
        knn_backend (`str`, defaults to `"torch"`): exact search in torch, or `"faiss"` (extra `index`).
    """

    model_type = "spm"

    def __init__(
        self,
        encoder: str = "resnet18",
        encoder_depths: list[int] | None = None,
        encoder_widths: list[int] | None = None,
        num_channels: int = 3,
        image_size: int = 32,
        fusion_hidden_dim: int | None = None,
        num_experts: int = 1,
        fusion_similarity: str = "dot",
        memory_mode: str = "class_mean",
        knn_k: int = 64,
        knn_backend: str = "torch",
        **kwargs,
    ):
        if encoder != "custom" and encoder not in ENCODER_PRESETS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODER_PRESETS)} or 'custom'")
        preset = ENCODER_PRESETS.get(encoder, {})
        self.encoder = encoder
        self.encoder_depths = list(encoder_depths or preset.get("depths") or [])
        self.encoder_widths = list(encoder_widths or preset.get("widths") or [])
        if not self.encoder_depths or len(self.encoder_depths) != len(self.encoder_widths):
            raise ValueError("encoder_depths and encoder_widths must be given and have the same length")
        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode must be one of {MEMORY_MODES}, got {memory_mode!r}")
        if knn_backend not in KNN_BACKENDS:
            raise ValueError(f"knn_backend must be one of {KNN_BACKENDS}, got {knn_backend!r}")
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.num_channels = num_channels
        self.image_size = image_size
        self.fusion_hidden_dim = fusion_hidden_dim or self.encoder_widths[-1]
        self.num_experts = num_experts
        if fusion_similarity not in ("dot", "cosine"):
            raise ValueError(f"fusion_similarity must be 'dot' or 'cosine', got {fusion_similarity!r}")
        self.fusion_similarity = fusion_similarity
        self.memory_mode = memory_mode
        self.knn_k = knn_k
        self.knn_backend = knn_backend
        super().__init__(**kwargs)

    @property
    def embed_dim(self) -> int:
        return self.encoder_widths[-1]


__all__ = ["SPMConfig", "ENCODER_PRESETS"]

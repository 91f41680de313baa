"""Configuration of the SPM image classifier (`SPMForImageClassification`)."""

from __future__ import annotations

import math
import numbers

from transformers import AutoConfig, PreTrainedConfig


# CIFAR-style ResNets (3x3 stem, no max-pool, BasicBlocks). `resnet18` is the paper's encoder
# (512-d embeddings); `resnet-small` (0.3M parameters) trains on a 2-core CPU; `resnet-mini` is for smoke
# runs and `resnet-tiny` for unit tests.
ENCODER_PRESETS: dict[str, dict[str, list[int]]] = {
    "resnet18": {"depths": [2, 2, 2, 2], "widths": [64, 128, 256, 512]},
    "resnet-small": {"depths": [1, 1, 1], "widths": [32, 64, 128]},
    "resnet-mini": {"depths": [1, 1, 1], "widths": [16, 32, 64]},
    "resnet-tiny": {"depths": [1, 1], "widths": [8, 16]},
}

MEMORY_MODES = ("class_mean", "knn")
KNN_BACKENDS = ("torch", "faiss")
# How `knn` mode turns a query's neighbours into class probabilities (see SPMConfig's docstring).
KNN_AGGREGATIONS = ("class_mean_mixture", "neighbour_softmax", "neighbourhood_means")
EPISODE_READINGS = ("class_mean", "knn")
FUSION_SIMILARITIES = ("dot", "cosine")
# "relation": the paper's pairwise relation experts (learned); "cosine_prototype": no parameter at all, the
# cosine of the query embedding and each prototype over a fixed temperature.
FUSIONS = ("relation", "cosine_prototype")
# How a transformers backbone's output becomes one embedding per image (see `backbone_embed_dim`).
BACKBONE_POOLINGS = ("pooler", "mean", "cls")
BACKBONE_ENCODER = "backbone"
SUPPORTED_PROBLEM_TYPES = (None, "single_label_classification")


def check_int(name: str, value, minimum: int = 1) -> int:
    """`value` as an `int`; `TypeError` unless it is an integer (booleans and 2.0 are not),
    `ValueError` if it is below `minimum`. Both name the argument, the value and what is allowed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else `ValueError` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_positive_float(name: str, value) -> float:
    """`value` as a `float`; `TypeError` unless it is a real number, `ValueError` unless finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number > 0, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def _as_backbone_config(backbone_config, backbone: str | None):
    """The backbone's `PreTrainedConfig`: given, rebuilt from its dict (a saved `config.json`), read from
    `backbone` (a Hub id or a local folder), or None for the built-in CIFAR ResNets."""
    if backbone is not None and (not isinstance(backbone, str) or not backbone):
        raise TypeError(f"backbone must be a Hub model id or a local folder (a non-empty string), got {backbone!r}")
    if backbone_config is None:
        return AutoConfig.from_pretrained(backbone) if backbone is not None else None
    if isinstance(backbone_config, PreTrainedConfig):
        return backbone_config
    if isinstance(backbone_config, dict):
        if "model_type" not in backbone_config:
            raise ValueError("backbone_config as a dict needs its 'model_type' (e.g. 'vit', 'resnet', 'dinov2'), "
                             f"got keys {sorted(backbone_config)}")
        fields = {k: v for k, v in backbone_config.items() if k != "model_type"}
        return AutoConfig.for_model(backbone_config["model_type"], **fields)
    raise TypeError(f"backbone_config must be a transformers PreTrainedConfig, a dict or None, "
                    f"got {type(backbone_config).__name__}")


def backbone_embed_dim(backbone_config, pooling: str = "pooler") -> int:
    """Size of one image's embedding from a transformers vision model: with `"pooler"`, its pooled output
    (`pooler_output_size` where the config has one, as ViT's; else the last of `hidden_sizes`, the pooled
    channels of ResNet / ConvNeXt; else `hidden_size`, the CLS token of DINOv2 or the pooled features of
    Swin); with `"mean"` / `"cls"`, the width of `last_hidden_state` (`hidden_sizes[-1]` or `hidden_size`)."""
    sizes = getattr(backbone_config, "hidden_sizes", None)
    width = sizes[-1] if sizes else getattr(backbone_config, "hidden_size", None)
    if pooling == "pooler":
        width = getattr(backbone_config, "pooler_output_size", None) or width
    if not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(
            f"cannot tell the embedding size of a {type(backbone_config).__name__} backbone (no hidden_sizes, "
            "hidden_size or pooler_output_size); give a transformers vision model config"
        )
    return int(width)


def _check_int_list(name: str, values) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise TypeError(f"{name} must be a list of integers >= 1, got {values!r}")
    return [check_int(f"{name}[{i}]", v) for i, v in enumerate(values)]


class SPMConfig(PreTrainedConfig):
    r"""Configuration of a semi-parametric image classifier.

    Args:
        encoder (`str`, *optional*): a key of `ENCODER_PRESETS` (default `"resnet18"`), or `"custom"` with
            `encoder_depths` / `encoder_widths` given; `"backbone"` (the default when a backbone is given)
            for a transformers vision model.
        encoder_depths (`list[int]`, *optional*): BasicBlocks per stage (overrides the preset).
        encoder_widths (`list[int]`, *optional*): channels per stage; the last is the embedding size.
        num_channels (`int`, *optional*): input image channels (default: the backbone's, else 3).
        image_size (`int`, *optional*): input height and width (default: the backbone's `image_size` where
            its config has one, e.g. 224 for a ViT, else 32); the saved image processor resizes to it.
        backbone_config (`PreTrainedConfig` or `dict`, *optional*): any transformers vision model config
            (ResNet, ConvNeXt, ViT, DINOv2, ...) to use as the encoder, built with `AutoModel.from_config`.
        backbone (`str`, *optional*): a Hub id or local folder of a transformers vision model; its config
            becomes `backbone_config` and, with `use_pretrained_backbone`, its weights the encoder's.
        use_pretrained_backbone (`bool`, defaults to `True`): load `backbone`'s weights when the model is
            built (nothing to load without `backbone`). The model's own config then says False: the weights
            are its own from then on, so a saved folder loads from its own weights file and never fetches
            the backbone again.
        backbone_pooling (`str`, defaults to `"pooler"`): `"pooler"` (the backbone's `pooler_output`,
            flattened; the mean of `last_hidden_state` where it has none), `"mean"` (mean of
            `last_hidden_state` over tokens or positions) or `"cls"` (its first token).
        freeze_encoder (`bool`, defaults to `False`): the encoder is not trained and stays in eval mode
            (BatchNorm statistics and dropout frozen too).
        fusion (`str`, defaults to `"relation"`): `"relation"` (the pairwise relation experts below) or
            `"cosine_prototype"` (no parameter: cosine of query and prototype over `fusion_temperature`),
            with which a frozen encoder and a memory are a classifier that trained nothing on the user's data.
        fusion_temperature (`float`, defaults to 0.1): temperature of `"cosine_prototype"`.
        fusion_hidden_dim (`int`, *optional*): width of the relation experts' projections
            (defaults to the embedding size, as in the paper).
        num_experts (`int`, defaults to 1): pairwise relation experts mixed by a gate (the paper ships 1,
            in which case no gate is built).
        fusion_similarity (`str`, defaults to `"dot"`): `"dot"` (the paper's scaled dot product of the
            projections) or `"cosine"` (their cosine); either is multiplied by a learned logit scale.
        memory_mode (`str`, defaults to `"class_mean"`): `"class_mean"` (SPM-C: one prototype per class,
            the mean embedding of every sample of that class in memory) or `"knn"` (SPM-R: per query, its
            `knn_k` nearest memory entries, read as `knn_aggregation` says).
        knn_k (`int`, defaults to 64): neighbourhood size in `knn` mode.
        knn_backend (`str`, defaults to `"torch"`): exact search in torch, or `"faiss"` (extra `index`).
        knn_aggregation (`str`, defaults to `"class_mean_mixture"`): `"neighbour_softmax"` scores every
            neighbour with the fusion as a prototype of its own, and a class's probability is the sum over its
            neighbours (a class with more, closer neighbours wins); `"class_mean_mixture"` averages that
            distribution with `class_mean` mode's (the neighbourhood sharpens the global class means; on
            CIFAR-10 it reads above either alone); `"neighbourhood_means"` (the authors')
            averages each class's neighbours into one prototype, so a class with one stray neighbour weighs as
            much as one with fifty.
        episode_reading (`str`, defaults to `"class_mean"`): how a training batch used as its own support
            (`forward(..., leave_one_out=True)`) is read: `"class_mean"` (each query against the batch's class
            means, its own sample left out) or `"knn"` (each query against its `knn_k` nearest batch-mates,
            itself left out, read as `knn_aggregation` says: training in `knn` mode).
        core_ids_digest (`str`, *optional*): SHA-256 of the sorted ids of the core rows the parameters were
            trained on (`spm_hf.training.core_split`), recorded by training; the ids themselves are not.
        core_size (`int`, *optional*): the number of core rows.

    `problem_type` (a `PreTrainedConfig` field) may only be None or `"single_label_classification"`.
    A value of the wrong type raises `TypeError`, one out of range `ValueError`; both name the argument,
    the value and what is allowed.
    """

    model_type = "spm"
    # Trainer's predictions are the logits alone (what compute_metrics expects), not every output field
    keys_to_ignore_at_inference = ["hidden_states", "embeddings", "neighbor_keys", "loss_mask"]

    def __init__(
        self,
        encoder: str | None = None,
        encoder_depths: list[int] | None = None,
        encoder_widths: list[int] | None = None,
        num_channels: int | None = None,
        image_size: int | None = None,
        fusion_hidden_dim: int | None = None,
        num_experts: int = 1,
        fusion_similarity: str = "dot",
        memory_mode: str = "class_mean",
        knn_k: int = 64,
        knn_backend: str = "torch",
        knn_aggregation: str = "class_mean_mixture",
        episode_reading: str = "class_mean",
        backbone_config: PreTrainedConfig | dict | None = None,
        backbone: str | None = None,
        use_pretrained_backbone: bool = True,
        backbone_pooling: str = "pooler",
        freeze_encoder: bool = False,
        fusion: str = "relation",
        fusion_temperature: float = 0.1,
        core_ids_digest: str | None = None,
        core_size: int | None = None,
        **kwargs,
    ):
        self.backbone_config = _as_backbone_config(backbone_config, backbone)
        self.backbone = backbone
        self.use_pretrained_backbone = _check_bool("use_pretrained_backbone", use_pretrained_backbone)
        self.backbone_pooling = check_choice("backbone_pooling", backbone_pooling, BACKBONE_POOLINGS)
        self.freeze_encoder = _check_bool("freeze_encoder", freeze_encoder)
        if encoder is None:
            encoder = BACKBONE_ENCODER if self.backbone_config is not None else "resnet18"
        if self.backbone_config is not None:
            if encoder != BACKBONE_ENCODER:
                raise ValueError(f"encoder={encoder!r} and a backbone were both given; a transformers backbone "
                                 f"is encoder={BACKBONE_ENCODER!r}")
            self.encoder, self.encoder_depths, self.encoder_widths = encoder, [], []
            backbone_size = getattr(self.backbone_config, "image_size", None)
            if image_size is None and isinstance(backbone_size, (list, tuple)):
                backbone_size = backbone_size[0] if len(set(backbone_size)) == 1 else None
            image_size = image_size if image_size is not None else backbone_size
            num_channels = num_channels if num_channels is not None else getattr(self.backbone_config, "num_channels", 3)
        else:
            if encoder == BACKBONE_ENCODER:
                raise ValueError(f"encoder={BACKBONE_ENCODER!r} needs backbone_config= or backbone=")
            if not isinstance(encoder, str) or (encoder != "custom" and encoder not in ENCODER_PRESETS):
                raise ValueError(
                    f"unknown encoder {encoder!r}; choose one of {sorted(ENCODER_PRESETS)}, 'custom', or give "
                    "backbone_config= / backbone= (a transformers vision model)"
                )
            preset = ENCODER_PRESETS.get(encoder, {})
            self.encoder = encoder
            self.encoder_depths = _check_int_list("encoder_depths", encoder_depths or preset.get("depths") or [])
            self.encoder_widths = _check_int_list("encoder_widths", encoder_widths or preset.get("widths") or [])
            if not self.encoder_depths or len(self.encoder_depths) != len(self.encoder_widths):
                raise ValueError(
                    f"encoder_depths and encoder_widths must be given and have the same length, got "
                    f"{self.encoder_depths} and {self.encoder_widths} (encoder={encoder!r})"
                )
        self.num_channels = check_int("num_channels", 3 if num_channels is None else num_channels)
        self.image_size = check_int("image_size", 32 if image_size is None else image_size)
        self.fusion_hidden_dim = (
            self.embed_dim if fusion_hidden_dim is None else check_int("fusion_hidden_dim", fusion_hidden_dim)
        )
        self.num_experts = check_int("num_experts", num_experts)
        self.fusion_similarity = check_choice("fusion_similarity", fusion_similarity, FUSION_SIMILARITIES)
        self.fusion = check_choice("fusion", fusion, FUSIONS)
        self.fusion_temperature = check_positive_float("fusion_temperature", fusion_temperature)
        if core_ids_digest is not None and (
            not isinstance(core_ids_digest, str) or len(core_ids_digest) != 64
            or any(c not in "0123456789abcdef" for c in core_ids_digest)
        ):
            raise ValueError(f"core_ids_digest must be a SHA-256 hex digest (64 hex characters), got {core_ids_digest!r}")
        self.core_ids_digest = core_ids_digest
        self.core_size = None if core_size is None else check_int("core_size", core_size)
        self.memory_mode = memory_mode
        self.knn_k = knn_k
        self.knn_backend = knn_backend
        self.knn_aggregation = knn_aggregation
        self.episode_reading = episode_reading
        self.check_memory_settings()
        super().__init__(**kwargs)
        self.check_problem_type()

    @property
    def embed_dim(self) -> int:
        if self.backbone_config is not None:
            return backbone_embed_dim(self.backbone_config, self.backbone_pooling)
        return self.encoder_widths[-1]

    def check_problem_type(self) -> None:
        """Raise a `ValueError` unless `problem_type` is None or `"single_label_classification"`: the model
        outputs one distribution over the classes in memory, so regression and multi-label losses have
        nothing to apply to. Also checked by the model's loss, since it may be set on a loaded config."""
        if self.problem_type not in SUPPORTED_PROBLEM_TYPES:
            raise ValueError(
                f"problem_type must be one of {SUPPORTED_PROBLEM_TYPES}, got {self.problem_type!r}: an SPM "
                "outputs a single-label distribution over the classes in its memory (its loss is the NLL of "
                "one class index per image), so regression and multi-label classification are not supported"
            )

    def check_memory_settings(self) -> None:
        """Raise a `ValueError` / `TypeError` naming the setting unless `memory_mode`, `knn_k`, `knn_backend`,
        `knn_aggregation` and `episode_reading` are valid. The model calls it before every memory read, since these may be
        changed on a loaded model (`model.config.memory_mode = "knn"`)."""
        check_choice("memory_mode", self.memory_mode, MEMORY_MODES)
        check_int("knn_k", self.knn_k)
        check_choice("knn_backend", self.knn_backend, KNN_BACKENDS)
        check_choice("knn_aggregation", self.knn_aggregation, KNN_AGGREGATIONS)
        check_choice("episode_reading", self.episode_reading, EPISODE_READINGS)


__all__ = ["SPMConfig", "ENCODER_PRESETS", "BACKBONE_POOLINGS", "EPISODE_READINGS", "FUSIONS", "KNN_AGGREGATIONS", "KNN_BACKENDS",
           "MEMORY_MODES", "backbone_embed_dim"]

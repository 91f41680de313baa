"""`ImageSampleMemory`: the generator's sample memory as a diffusers pipeline component.

diffusers saves and loads a pipeline component only if it subclasses a loadable base (here `ModelMixin`),
and resolves the base by name in the defining module, so this module imports `ModelMixin` **by name**
(a class written as `class X(diffusers.ModelMixin)` is reported as having no loading methods). The component *holds* one `spm_hf.memory.SampleMemory` (`.sample_memory`), the
project's single memory type, rather than inheriting from it: `nn.Module` and `SampleMemory` both define
`dtype`, `device`, `to` and `__len__` with different meanings. Every `SampleMemory` method a user needs is
forwarded (`forget`, `add`, `ids`, `labels`, `values`/`images`, `label_names`, `digest`, `ledger`, ...),
and code that wants the plain object takes `.sample_memory`.

On disk (the pipeline's `memory/` folder)::

    config.json                  num_items, label_names, value_shape, value_dtype, digest (diffusers config)
    sample_memory.safetensors    uint8 images, labels, trained_on flags of the live rows only
    sample_memory.json           ids, ledger (keyed id hashes of forgotten samples), file sha256, seal

The diffusers config is re-registered after every `add` and `forget`, so `config.json` always describes
the rows actually saved; `from_pretrained` checks the two agree (count and digest) and `SampleMemory.load`
checks the file hash and content digest, naming the offending file on a mismatch. No pickle.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..files import atomic_directory, reading_directory
from ..memory import MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME, MemoryIntegrityError, SampleMemory


class ImageSampleMemory(ModelMixin, ConfigMixin):
    """A deletable memory of training images, usable as the `memory` component of `SPMDiffusionPipeline`.

    Args:
        label_names: class names (labels index this list).
        value_shape: shape of one stored value, `(C, H, W)` for images.
        value_dtype: `"uint8"` for images (the default); float dtypes store features.
        num_items, digest: bookkeeping written by `save_pretrained`; a freshly built memory is empty.
    """

    config_name = "config.json"
    _keys_to_ignore_on_load_unexpected = None

    @register_to_config
    def __init__(
        self,
        label_names: Sequence[str] = ("0",),
        value_shape: Sequence[int] = (3, 32, 32),
        value_dtype: str = "uint8",
        num_items: int = 0,
        digest: str | None = None,
    ):
        super().__init__()
        self._memory = SampleMemory(list(label_names), tuple(value_shape), getattr(torch, value_dtype))
        # An empty non-persistent buffer gives the module a device (pipelines ask their components for one).
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)
        self._sync_config()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sample_memory(cls, memory: SampleMemory) -> ImageSampleMemory:
        """Wrap an existing `SampleMemory` (not copied: the component owns it from now on)."""
        obj = cls(
            label_names=memory.label_names,
            value_shape=memory.value_shape,
            value_dtype=str(memory.dtype).replace("torch.", ""),
        )
        obj._memory = memory
        obj._sync_config()
        return obj

    @classmethod
    def from_images(
        cls,
        images: torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        ids: Sequence[str],
        label_names: Sequence[str],
        trained_on: bool | Sequence[bool] | torch.Tensor = True,
    ) -> ImageSampleMemory:
        """A memory of (N, C, H, W) uint8 images with their labels and stable ids."""
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8 (N, C, H, W); got {images.dtype}")
        obj = cls(label_names=list(label_names), value_shape=tuple(images.shape[1:]), value_dtype="uint8")
        obj.add(ids, labels, images, trained_on=trained_on)
        return obj

    # ------------------------------------------------------------------ config kept in step
    def _sync_config(self) -> None:
        m = self._memory
        self.register_to_config(
            label_names=list(m.label_names),
            value_shape=list(m.value_shape),
            value_dtype=str(m.dtype).replace("torch.", ""),
            num_items=len(m),
            digest=m.digest(),
        )

    # ------------------------------------------------------------------ SampleMemory surface
    @property
    def sample_memory(self) -> SampleMemory:
        """The underlying `SampleMemory` (mutate it through this component so the config stays in step)."""
        return self._memory

    @property
    def ids(self) -> list[str]:
        return self._memory.ids

    @property
    def labels(self) -> torch.Tensor:
        return self._memory.labels

    @property
    def values(self) -> torch.Tensor:
        return self._memory.values

    @property
    def images(self) -> torch.Tensor:
        """(N, C, H, W) uint8 images (alias of `values`)."""
        return self._memory.values

    @property
    def trained_on(self) -> torch.Tensor:
        return self._memory.trained_on

    @property
    def label_names(self) -> list[str]:
        return self._memory.label_names

    @property
    def value_shape(self) -> tuple[int, ...]:
        return self._memory.value_shape

    @property
    def num_classes(self) -> int:
        return self._memory.num_classes

    @property
    def ledger(self) -> list[dict]:
        return self._memory.ledger

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._memory

    def extra_repr(self) -> str:
        return repr(self._memory)

    def digest(self) -> str:
        return self._memory.digest()

    def verify(self) -> None:
        self._memory.verify()

    def class_index(self, cls: str | int) -> int:
        return self._memory.class_index(cls)

    def class_counts(self) -> dict[str, int]:
        return self._memory.class_counts()

    def is_forgotten(self, sample_id: str) -> bool:
        return self._memory.is_forgotten(sample_id)

    def ledger_summary(self) -> dict:
        return self._memory.ledger_summary()

    def rows_of_class(self, label: int) -> torch.Tensor:
        """(n,) row indices of the live samples with `label`."""
        return torch.nonzero(self._memory.labels == int(label)).flatten()

    def add(self, ids, labels, values, trained_on=True, allow_reingest: bool = False) -> None:
        """`SampleMemory.add`, then the config is brought in step."""
        self._memory.add(ids, labels, values, trained_on=trained_on, allow_reingest=allow_reingest)
        self._sync_config()

    def forget(self, classes: Iterable[str | int] | str | int | None = None, *, ids: Iterable[str] | None = None):
        """`SampleMemory.forget` (returns its `ForgetReceipt`), then the config is brought in step."""
        receipt = self._memory.forget(classes, ids=ids)
        self._sync_config()
        return receipt

    # ------------------------------------------------------------------ device
    def _apply(self, fn, recurse=True):
        # `pipe.to(device)` moves the images with the module; dtype casts leave uint8 values untouched.
        out = super()._apply(fn, recurse)
        device = self._device_anchor.device
        if device != self._memory.device:
            self._memory.to(device)
        return out

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write `config.json` + `sample_memory.safetensors` + `sample_memory.json` to `save_directory`, the
        three as one atomic step (`spm_hf.files.atomic_directory`; inside a pipeline's save, that save's).

        Extra keyword arguments from `DiffusionPipeline.save_pretrained` (`safe_serialization`,
        `variant`, ...) are accepted and ignored: the memory is always safetensors + JSON.
        """
        if kwargs.get("push_to_hub"):
            raise ValueError("push the whole pipeline (SPMDiffusionPipeline.push_to_hub), not its memory alone")
        self._sync_config()
        owned = (self.config_name, MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME)
        with atomic_directory(save_directory, owned=owned) as staging:
            self._memory.save(staging)
            self.save_config(staging)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, verify: bool = True, **kwargs
    ) -> ImageSampleMemory:
        """Load a memory written by `save_pretrained` (a local folder, or a Hub repo id with `subfolder`).

        Keyword arguments that `DiffusionPipeline.from_pretrained` passes to model components
        (`torch_dtype`, `device_map`, ...) are ignored: images stay uint8 on the CPU until the pipeline
        moves them. Raises `MemoryIntegrityError` naming the file when the files disagree.
        """
        path = os.fspath(pretrained_model_name_or_path)
        local = os.path.join(path, subfolder) if subfolder else path
        if os.path.isdir(local):
            with reading_directory(local):
                return cls._from_folder(local, verify)
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download

            pattern = f"{subfolder}/*" if subfolder else None
            path = snapshot_download(
                path,
                allow_patterns=pattern,
                revision=kwargs.get("revision"),
                cache_dir=kwargs.get("cache_dir"),
                token=kwargs.get("token"),
                local_files_only=kwargs.get("local_files_only", False),
            )
        return cls._from_folder(os.path.join(path, subfolder) if subfolder else path, verify)

    @classmethod
    def _from_folder(cls, path: str, verify: bool) -> ImageSampleMemory:
        config_file = os.path.join(path, cls.config_name)
        if not os.path.exists(config_file):
            raise FileNotFoundError(f"no memory config {config_file}")
        config = cls.load_config(path)
        memory = SampleMemory.load(path, verify=verify)
        if int(config.get("num_items", -1)) != len(memory) or (config.get("digest") and config["digest"] != memory.digest()):
            raise MemoryIntegrityError(
                f"{config_file} describes {config.get('num_items')} items (digest {str(config.get('digest'))[:12]}) "
                f"but {MEMORY_CONFIG_NAME} holds {len(memory)} (digest {memory.digest()[:12]}): the files are "
                "from different saves"
            )
        if list(config.get("label_names", memory.label_names)) != memory.label_names:
            raise MemoryIntegrityError(f"{config_file} and {MEMORY_CONFIG_NAME} disagree on the label names")
        return cls.from_sample_memory(memory)

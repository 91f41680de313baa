"""`SPMDiffusionPipeline`: class-conditional generation that reads a forgettable memory of images.

Components: `unet` (`SPMUNet2DModel`), `scheduler` (diffusers' `DDIMScheduler` or `DDPMScheduler`) and
`memory` (`ImageSampleMemory`). Saved with `save_pretrained`; loaded with
`SPMDiffusionPipeline.from_pretrained`, or, where spm_hf is not installed, with
`DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)`: a saved folder carries the
pipeline's and its components' code (`remote_code.py` says which files and why).

Sampling, per call (the method: docs/method.md, "The generator"):

1. Class labels (names or indices) are resolved against the memory's label names.
2. One integer drawn from `generator` seeds the support draw (each class's draw from its own stream, so
   the support of a class does not depend on which other classes share the batch); then the initial
   noise is drawn from `generator`. A seed fixes the images. With one generator per image, each draws
   one integer and then that image's noise, and a class's support (shared by the images of that class)
   is seeded by the first of them: an image that is the first of its class in a batch is the image the
   same request alone, with the same generator, gives.
3. **Support.** For each requested class, `support_size` items of that class are drawn without
   replacement from the memory (all of them if fewer remain, or if `support_size=None`); candidates are
   ordered by sample id before drawing, so the draw depends only on *which* samples remain, not on the
   memory's row order. A pipeline whose memory had samples forgotten therefore produces exactly the
   images of a pipeline built from the retained samples only (forgetting contract, point 2).
4. **Forgotten classes** (no sample of the class left). `strict=True` raises `ForgottenClassError`.
   Otherwise a `ForgottenClassWarning` is emitted and `forget_policy` decides:
   - `"substitute"` (default): the support is drawn from the first class (lowest index) that still has
     samples and relabelled as the requested class, so the model draws that class: the reference
     evaluation's protocol, whose hard-coded class 0, or 1 when 0 is forgotten, is this rule for one
     forgotten class. A model retrained without the class, asked for it under the same policy, draws
     the same substitute.
   - `"empty"`: no support; the bottleneck reads nothing (zero fused features) and the class signal is
     the zero prototype of a label with no memory: the model draws from its weights alone (what the
     reference's relation block does in training mode).
   - `"all_remaining"`: the support is drawn from every remaining sample (any class) and matched to the
     requested class (the fallback built into the reference's relation block, taken in eval mode only).

   Why `"substitute"` is the default (measured in docs/results.md, "What a forgotten class draws"): with
   no class memory, what the weights draw is a prior they learned with the forgotten class in the data,
   and guidance can amplify it. The judge's rate for the forgotten class, unlearned vs retrained
   generator, 500 images each, two cifar10-cpu model pairs (3,984 and 6,987 steps), guidance 15 and 1.3:
   `"substitute"` stays within 4.6 points of retraining in all four cells (at most 16.4 %); `"empty"`
   was 8.8 vs 0.0 and 66.6 vs 55.8 on the 6,987-step pair; `"all_remaining"` 31.2 vs 20.2 on the
   3,984-step pair (98 vs 24 with 50 images, 50 DDIM steps: the policy's behaviour depends on the
   sampler settings). A default must hold on every pair and scale measured, not on one (docs/CHANGELOG.md
   records the earlier defaults).
5. **Guidance** as in the paper: with `guidance_scale > 1` the batch is `[uncond, cond]`, where the
   unconditional half drops the class embedding (null class) but keeps the label-matched support;
   ε = ε_u + s (ε_c − ε_u). The reference's `guide_w` w corresponds to `guidance_scale = 1 + w`
   (its default w = 0.3 is `guidance_scale=1.3`, our default).
6. **Support-feature cache** (`use_support_cache=True`, see `support_cache.py`): the support path runs at
   most once per call (zero times when warm), never per step, guidance branch or sample. With
   `use_support_cache=False` the pipeline does what the reference does: the support images go through
   the support path at every step, duplicated for the two guidance branches.

DDIM as in the reference: x̂_0 is clipped to [-1, 1] and ε̂ re-derived from the clipped x̂_0
(`use_clipped_model_output=True`), η = 0 by default. Deviation: timesteps follow diffusers' "leading"
spacing (0, 20, ..., 980 for 50 steps; the reference uses 981, 961, ..., 1 on its 1-based table).
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..files import reading_directory
from ..hub import SPMHubMixin
from ..memory import MemoryShapeError, UnknownClassError
from .memory_component import ImageSampleMemory
from .remote_code import native_index, remote_code_files, write_remote_code
from .support_cache import SupportFeatureCache, images_to_model_input
from .unet_spm import SPMUNet2DModel, SupportFeatures


# what a class with no sample left reads, per `forget_policy` (module docstring, point 4)
FORGET_POLICY_TEXT = {
    "substitute": "drawing its support from the first class with samples left, relabelled",
    "empty": "generating without support (empty bottleneck)",
    "all_remaining": "drawing its support from all remaining samples",
}
FORGET_POLICIES = tuple(FORGET_POLICY_TEXT)
DEFAULT_FORGET_POLICY = FORGET_POLICIES[0]


def check_forget_policy(forget_policy: str) -> None:
    """Raise `ValueError` unless `forget_policy` is one of `FORGET_POLICIES`."""
    if forget_policy not in FORGET_POLICIES:
        raise ValueError(f"forget_policy must be one of {FORGET_POLICIES}, got {forget_policy!r}")


def _check_steps(num_inference_steps, num_train_timesteps: int | None) -> int:
    num_train_timesteps = num_train_timesteps or 10**9  # a scheduler without a training schedule: no upper bound
    if isinstance(num_inference_steps, (bool, np.bool_)) or not isinstance(num_inference_steps, numbers.Integral):
        raise TypeError(f"num_inference_steps must be an integer in 1..{num_train_timesteps}, got "
                        f"{num_inference_steps!r} ({type(num_inference_steps).__name__})")
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in 1..{num_train_timesteps} (the scheduler's training "
                         f"steps), got {num_inference_steps!r}")
    return int(num_inference_steps)


def _check_real(name: str, value, low: float, high: float = math.inf) -> float:
    allowed = f"a finite number >= {low}" if high == math.inf else f"a finite number in [{low}, {high}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def _check_class_labels(class_labels) -> list[str | int]:
    """`class_labels` as a list of names and integer indices (which `get_label_ids` then resolves)."""
    if isinstance(class_labels, (torch.Tensor, np.ndarray)):
        if isinstance(class_labels, np.ndarray):
            integer = class_labels.dtype.kind in "iu"
        else:
            dtype = class_labels.dtype
            integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
        if not integer:
            raise TypeError(f"class_labels must be class names or integer indices, got a {class_labels.dtype} array")
        if class_labels.ndim > 1:
            raise ValueError(f"class_labels must be one label per image (1-D), got shape {tuple(class_labels.shape)}")
        return [int(v) for v in class_labels.reshape(-1).tolist()]
    if isinstance(class_labels, (str, numbers.Integral)) and not isinstance(class_labels, (bool, np.bool_)):
        return [class_labels]
    if not isinstance(class_labels, (list, tuple, range)):
        raise TypeError(f"class_labels must be a class name, an integer index or a list of them (one per image), "
                        f"got {class_labels!r} ({type(class_labels).__name__})")
    out = []
    for position, label in enumerate(class_labels):
        if isinstance(label, torch.Tensor) and label.dim() == 0 and not (
            label.is_floating_point() or label.is_complex() or label.dtype == torch.bool
        ):
            label = int(label)
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (str, numbers.Integral)):
            raise TypeError(f"class_labels[{position}] must be a class name or an integer index, got {label!r} "
                            f"({type(label).__name__})")
        out.append(label)
    return out


class ForgottenClassError(ValueError):
    """A class was requested with `strict=True` but no sample of it remains in the memory."""


class ForgottenClassWarning(UserWarning):
    """A class with no sample left in the memory was requested; the forget policy applies."""


def check_memory_fits(unet: SPMUNet2DModel, memory: ImageSampleMemory) -> None:
    """Raise `TypeError` if `unet` or `memory` is not of its kind (`component_classes`, compared by name), and
    `MemoryShapeError` if the memory's images or classes do not fit the UNet."""
    for name, value in (("unet", unet), ("memory", memory)):
        klass = component_classes()[name]
        if not any(same_class(c, klass) for c in type(value).__mro__):
            raise TypeError(f"{name} must be an {klass.__name__}, got {type(value).__module__}."
                            f"{type(value).__qualname__}")
    cfg = unet.config
    want = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    if tuple(memory.value_shape) != want:
        raise MemoryShapeError(
            f"memory images have shape {tuple(memory.value_shape)}; this UNet generates {want} (channels, height, width)"
        )
    if memory.sample_memory.dtype != torch.uint8:
        raise MemoryShapeError(f"the generator memory stores uint8 images; got {memory.sample_memory.dtype}")
    if memory.num_classes != cfg.num_class_embeds:
        raise MemoryShapeError(
            f"memory has {memory.num_classes} classes {memory.label_names}; the UNet was built for {cfg.num_class_embeds}"
        )


def component_classes() -> dict[str, type]:
    """The pipeline's own component classes as their modules hold them now. diffusers executes a remote-code
    component's module again each time it loads that component, which defines its classes anew: the names
    this module imported then refer to the previous ones."""
    return {"unet": sys.modules[SPMUNet2DModel.__module__].SPMUNet2DModel,
            "memory": sys.modules[ImageSampleMemory.__module__].ImageSampleMemory}


def same_class(a: type, b: type) -> bool:
    """True if `a` and `b` are one class, or the same class defined again by a new execution of its module."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


class SPMDiffusionPipeline(SPMHubMixin, DiffusionPipeline):
    """Semi-parametric class-conditional diffusion: see the module docstring.

    Args:
        unet: an `SPMUNet2DModel`.
        scheduler: a diffusers `DDIMScheduler` (sampling default) or `DDPMScheduler`.
        memory: an `ImageSampleMemory` whose images and classes fit the UNet.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: SPMUNet2DModel, scheduler, memory: ImageSampleMemory):
        super().__init__()
        check_memory_fits(unet, memory)
        self.register_modules(unet=unet, scheduler=scheduler, memory=memory)
        self.support_cache = SupportFeatureCache()

    # ------------------------------------------------------------------ persistence (spm_hf.hub.SPMHubMixin)
    card_kind = "generator"
    memory_subfolder = "memory"
    @property
    def owned_files(self) -> tuple[str, ...]:
        """What a save always writes whole, and drops from an old folder when it does not write it: the
        memory, `model_index.json` and the remote code at the folder's root."""
        return ("memory", "model_index.json", *remote_code_files()[""])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the pipeline computes in: the UNet's. (diffusers reports the first module component by
        name, here the memory, whose images are uint8 whatever the pipeline's dtype.)"""
        return self.unet.dtype

    def _save_files(self, directory: str, *args, **kwargs) -> None:
        """diffusers' save, then the remote code (`remote_code.write_remote_code`) for the components whose
        class is this package's own (a subclass defined elsewhere keeps the module diffusers records)."""
        super()._save_files(directory, *args, **kwargs)
        components = {name: klass.__name__ for name, klass in component_classes().items()
                      if same_class(type(getattr(self, name)), klass)}
        write_remote_code(directory, type(self).__name__, components)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' `load_config`, with the remote-code names of `model_index.json` read as this package's
        own modules: loading through this class runs the installed code, never the folder's copy."""
        loaded = super().load_config(*args, **kwargs)
        config, rest = (loaded[0], loaded[1:]) if isinstance(loaded, tuple) else (loaded, ())
        if "_class_name" in config:  # a model_index.json (component configs are read by their own classes)
            modules = {name: klass.__module__ for name, klass in component_classes().items()}
            config = native_index(config, modules, cls.__name__)
        return (config, *rest) if rest else config

    @classmethod
    def _get_signature_types(cls):
        # diffusers warns when a loaded component is no instance of its `__init__` annotation, resolved before
        # the components load; a remote-code load then executes the component modules again, which defines
        # their classes anew, so that check would warn about every correct component. `check_memory_fits`
        # checks the components' kinds by name instead.
        types = super()._get_signature_types()
        types.update({name: (inspect.Signature.empty,) for name in component_classes()})
        return types

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> SPMDiffusionPipeline:
        """Load from a local folder or a Hub repo id (downloaded whole first, so the memory's files come
        too). The installed code is used, not the folder's remote-code copy; without spm_hf installed,
        `DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` loads the copy. A local
        folder is read as one state (`spm_hf.files.reading_directory`); what was loaded is remembered for
        the next save or push (`SPMHubMixin.remember_origin`)."""
        path = os.fspath(pretrained_model_name_or_path)
        with reading_directory(path):
            if not os.path.isdir(path):
                from huggingface_hub import snapshot_download

                path = snapshot_download(
                    path,
                    revision=kwargs.pop("revision", None),
                    cache_dir=kwargs.get("cache_dir"),
                    token=kwargs.pop("token", None),
                    local_files_only=kwargs.pop("local_files_only", False),
                )
            pipe = super().from_pretrained(path, **kwargs)
        pipe.remember_origin(path)
        return pipe

    # ------------------------------------------------------------------ labels, forgetting
    @property
    def label_names(self) -> list[str]:
        return self.memory.label_names

    def get_label_ids(self, labels: Sequence[str | int] | str | int) -> list[int]:
        """Class names or indices -> indices (`UnknownClassError` lists the valid names)."""
        if isinstance(labels, (str, int)):
            labels = [labels]
        return [self.memory.class_index(label) for label in labels]

    def forget(self, classes: Iterable[str | int] | str | int | None = None, *, ids: Iterable[str] | None = None):
        """Delete whole classes (names or indices) and/or samples (`ids=`) from the memory; returns the
        `ForgetReceipt`. `forget(["cat"])` and `forget(classes=["cat"])` forget classes,
        `forget(ids=[...])` forgets samples: nothing is guessed from the values. The memory's config and the
        support cache follow at once; the UNet's weights are not touched."""
        return self.memory.forget(classes, ids=ids)

    def clear_support_cache(self) -> None:
        self.support_cache.clear()

    # ------------------------------------------------------------------ support selection
    def select_support(
        self,
        labels: list[int],
        support_size: int | None,
        seed: int | dict[int, int],
        strict: bool,
        forget_policy: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory rows and their matching labels for the requested classes (see the module docstring).
        `seed` seeds every class's draw, or is a mapping label -> the seed of that class's draw."""
        seeds = seed if isinstance(seed, dict) else dict.fromkeys(labels, seed)
        memory = self.memory
        all_labels = memory.labels.cpu()
        ids = memory.ids
        rows_out, labels_out = [], []
        counts = memory.class_counts()
        for label in sorted(set(labels)):
            rows = torch.nonzero(all_labels == label).flatten()
            if rows.numel() == 0:
                name = memory.label_names[label]
                if strict:
                    raise ForgottenClassError(
                        f"class {name!r} has no sample left in the memory (forgotten); strict=True forbids "
                        f"generating it. Classes with samples: {[n for n, c in counts.items() if c]}"
                    )
                warnings.warn(
                    f"class {name!r} has no sample left in the memory (forgotten); "
                    f"{FORGET_POLICY_TEXT[forget_policy]} (forget_policy={forget_policy!r}; pass strict=True to "
                    f"raise instead)",
                    ForgottenClassWarning,
                    stacklevel=3,
                )
                if forget_policy == "empty":
                    continue
                if forget_policy == "all_remaining":
                    rows = torch.arange(len(memory))
                else:  # substitute: the first class with samples left (`forget` never empties a memory)
                    first_kept = next(c for c, name in enumerate(memory.label_names) if counts[name])
                    rows = torch.nonzero(all_labels == first_kept).flatten()
            if support_size == 0:
                continue
            order = sorted(rows.tolist(), key=ids.__getitem__)
            rows = torch.tensor(order, dtype=torch.long)
            if support_size is not None and support_size < rows.numel():
                generator = torch.Generator().manual_seed((seeds[label] + 1_000_003 * label) % 2**63)
                pick = torch.randperm(rows.numel(), generator=generator)[:support_size]
                rows = rows[pick.sort().values]
            rows_out.append(rows)
            labels_out.append(torch.full((rows.numel(),), label, dtype=torch.long))
        if not rows_out:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return torch.cat(rows_out), torch.cat(labels_out)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        class_labels: Sequence[str | int] | str | int,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.3,
        support_size: int | None = 64,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        eta: float = 0.0,
        strict: bool = False,
        forget_policy: str = DEFAULT_FORGET_POLICY,
        use_support_cache: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one image per entry of `class_labels`.

        Args:
            class_labels: class names or indices, one per image.
            num_inference_steps: denoising steps, 1 to the scheduler's `num_train_timesteps`.
            guidance_scale: classifier-free guidance scale s >= 0 (> 1 enables guidance; 1.3 = the paper's w 0.3).
            support_size: support items drawn per requested class, >= 0 (None: all remaining; 0: none).
            generator: a `torch.Generator` (or one per image) fixing noise and support draw.
            output_type: `"pil"`, `"np"` ((B, H, W, C) floats in [0, 1]) or `"pt"` ((B, C, H, W)).
            eta: DDIM eta in [0, 1] (ignored by schedulers without it).
            strict: raise `ForgottenClassError` for a class with no sample left instead of warning.
            forget_policy: what a forgotten class reads: `"substitute"` (default: the first remaining class's
                support, relabelled), `"empty"` (no support) or `"all_remaining"` (support drawn from every
                remaining sample); see the module docstring.
            use_support_cache: reuse cached support features (False: recompute every step, per branch).

        Every argument is checked before any work: a bad one raises `TypeError` / `ValueError` (unknown classes
        `UnknownClassError`) naming it, its value and what is allowed.
        """
        # checked before any work, so that a bad argument changes nothing (no RNG drawn, no cache filled)
        check_forget_policy(forget_policy)
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        num_inference_steps = _check_steps(
            num_inference_steps, getattr(self.scheduler.config, "num_train_timesteps", None)
        )
        guidance_scale = _check_real("guidance_scale", guidance_scale, 0.0)  # <= 1: no guidance
        eta = _check_real("eta", eta, 0.0, 1.0)
        if support_size is not None:
            if isinstance(support_size, (bool, np.bool_)) or not isinstance(support_size, numbers.Integral):
                raise TypeError(f"support_size must be an integer >= 0 or None (all), got {support_size!r}")
            if support_size < 0:
                raise ValueError(f"support_size must be an integer >= 0 or None (all), got {support_size!r}")
            support_size = int(support_size)
        for name, flag in (("return_dict", return_dict), ("strict", strict), ("use_support_cache", use_support_cache)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        labels = self.get_label_ids(_check_class_labels(class_labels))
        if not labels:
            raise ValueError("class_labels is empty: give at least one class name or index")
        generators = generator if isinstance(generator, list) else [generator]
        if any(g is not None and not isinstance(g, torch.Generator) for g in generators) or (
            isinstance(generator, list) and None in generator
        ):
            raise TypeError(f"generator must be a torch.Generator, a list of them (one per image) or None, got "
                            f"{generator!r}; e.g. torch.Generator().manual_seed(0)")
        if isinstance(generator, list) and len(generator) != len(labels):
            raise ValueError(f"got {len(generator)} generators for {len(labels)} images")

        unet, device = self.unet, self._execution_device
        cfg = unet.config
        batch = len(labels)
        shape = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if isinstance(generator, list):  # each image's generator draws one integer (module docstring, point 2)
            image_seeds = [int(torch.randint(0, 2**62, (1,), generator=g).item()) for g in generator]
            seeds = {}
            for label, image_seed in zip(labels, image_seeds):
                seeds.setdefault(label, image_seed)  # a class's support: the first of its images' seeds
        else:
            seeds = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        rows, support_labels = self.select_support(labels, support_size, seeds, strict, forget_policy)
        # drawn in float32 whatever the UNet's dtype (a float64 or float16 draw takes other numbers from the
        # generator), so that a dtype move changes the images' precision, not the images
        x = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32).to(unet.dtype)
        x = x * self.scheduler.init_noise_sigma

        do_cfg = guidance_scale > 1.0
        label_t = torch.tensor(labels, dtype=torch.long, device=device)
        if do_cfg:
            label_in = torch.cat([label_t, label_t])
            drop = torch.cat([torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)]).to(device)
        else:
            label_in, drop = label_t, None

        support_kwargs: dict
        if use_support_cache:
            keys, values, embeddings = self.support_cache.get(unet, self.memory.sample_memory, rows)
            feats = SupportFeatures(keys, values, support_labels.to(device), embeddings)
            support_kwargs = {"support": feats}
        else:
            images = images_to_model_input(self.memory.values[rows.to(self.memory.sample_memory.device)], unet)
            s_labels = support_labels.to(device)
            if do_cfg:  # the reference's batch: the support duplicated for both guidance branches
                images, s_labels = torch.cat([images, images]), torch.cat([s_labels, s_labels])
            support_kwargs = {"support_images": images, "support_labels": s_labels}

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {}
        step_params = set(inspect.signature(self.scheduler.step).parameters)
        if "eta" in step_params:
            step_kwargs["eta"] = eta
        if "generator" in step_params:
            step_kwargs["generator"] = generator
        if "use_clipped_model_output" in step_params:
            step_kwargs["use_clipped_model_output"] = True  # the reference re-derives eps from the clipped x0

        for t in self.progress_bar(self.scheduler.timesteps):
            x_in = torch.cat([x, x]) if do_cfg else x
            x_in = self.scheduler.scale_model_input(x_in, t)
            eps = unet(x_in, t, label_in, class_dropout_mask=drop, **support_kwargs).sample
            if do_cfg:
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            x = self.scheduler.step(eps, t, x, **step_kwargs).prev_sample

        image = (x / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            images_out = image.cpu()
        else:
            images_out = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                images_out = self.numpy_to_pil(images_out)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images_out,)
        return ImagePipelineOutput(images=images_out)


def make_noise_scheduler() -> DDPMScheduler:
    """The paper's training schedule: 1,000 steps, linear β from 1e-4 to 0.02, ε-prediction, x̂_0 clipped."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
        prediction_type="epsilon", clip_sample=True,
    )


def make_pipeline(unet: SPMUNet2DModel, memory: ImageSampleMemory, train_scheduler=None) -> SPMDiffusionPipeline:
    """A sampling pipeline: DDIM built from the training (DDPM) scheduler's config."""
    train_scheduler = train_scheduler or make_noise_scheduler()
    return SPMDiffusionPipeline(unet=unet, scheduler=DDIMScheduler.from_config(train_scheduler.config), memory=memory)


__all__ = [
    "DEFAULT_FORGET_POLICY",
    "FORGET_POLICIES",
    "ForgottenClassError",
    "ForgottenClassWarning",
    "SPMDiffusionPipeline",
    "UnknownClassError",
    "check_memory_fits",
    "make_noise_scheduler",
    "make_pipeline",
]

"""Image preprocessing for SPM classifiers.

The processor saved beside an RGB SPM is transformers' own `ViTImageProcessorPil` (PIL backend: no
torchvision needed, and no custom code for Hub users). A 1-channel SPM gets `SPMImageProcessorPil`, the
same processor converting every image to grayscale: transformers' image-classification pipeline turns every
input into RGB first, which a 1-channel normalisation cannot take. `images_to_tensor` is the fast path
used to encode whole datasets: for images already at the target size it gives the processor's numbers
without its per-image overhead.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, ViTImageProcessorPil
from transformers.image_processing_base import ImageProcessingMixin
from transformers.image_utils import PILImageResampling


CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2470, 0.2435, 0.2616]
MNIST_MEAN = [0.1307]
MNIST_STD = [0.3081]


class SPMImageProcessorPil(ViTImageProcessorPil):
    """`ViTImageProcessorPil` for 1-channel models: every image is first converted to grayscale (PIL's
    `convert("L")` luma for RGB(A) input, the encoding `images_to_tensor` uses too), whatever mode it
    arrives in. With 3 statistics it behaves exactly as `ViTImageProcessorPil`."""

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs) -> np.ndarray:
        mean = kwargs.get("image_mean")
        mean = self.image_mean if mean is None else mean
        if not isinstance(mean, (list, tuple)) or len(mean) != 1:
            return super().process_image(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format,
                                         **kwargs)
        if isinstance(image, Image.Image):
            image = image.convert("L")
        image = super().process_image(image, do_convert_rgb=False, input_data_format=input_data_format, **kwargs)
        if image.shape[0] in (3, 4):  # (C, H, W) arrays and tensors: RGB or RGBA
            image = _luma(image[:3])
        return image


def _luma(image: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> (1, H, W) grayscale: through PIL for uint8 (bit-identical to `convert("L")`), the
    same ITU-R 601-2 weights for float arrays."""
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.ascontiguousarray(np.moveaxis(image, 0, -1))).convert("L"))[None]
    weights = np.array([0.299, 0.587, 0.114], dtype=image.dtype).reshape(3, 1, 1)
    return (image * weights).sum(axis=0, keepdims=True)


def load_image_processor(pretrained_model_name_or_path, **kwargs):
    """The image processor saved in a folder or Hub repo (`OSError` if there is none).

    `SPMImageProcessorPil` is built from this module, the copy loaded with the model (so a model loaded
    with `trust_remote_code` needs no second permission for its processor); any other processor through
    `AutoImageProcessor`."""
    config_dict, _ = ImageProcessingMixin.get_image_processor_dict(pretrained_model_name_or_path, **kwargs)
    # saved under its backend-free name ("SPMImageProcessor"), as transformers names every processor
    if config_dict.get("image_processor_type") in ("SPMImageProcessor", SPMImageProcessorPil.__name__):
        return SPMImageProcessorPil.from_pretrained(pretrained_model_name_or_path, **kwargs)
    return AutoImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)


def make_image_processor(
    image_size: int = 32, mean: list[float] | None = None, std: list[float] | None = None
) -> ViTImageProcessorPil:
    """Resize to `image_size` (bilinear), scale to [0, 1], normalise (CIFAR-10 statistics by default).
    One-channel statistics make a grayscale `SPMImageProcessorPil`, which converts any image to one channel."""
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
    mean = _statistics("mean", CIFAR10_MEAN if mean is None else mean)
    std = _statistics("std", CIFAR10_STD if std is None else std)
    if len(mean) != len(std):
        raise ValueError(f"mean and std must have one value per channel each, got mean={mean} and std={std}")
    if any(value <= 0 for value in std):
        raise ValueError(f"std must be > 0 per channel, got {std}")
    processor_class = ViTImageProcessorPil if len(mean) == 3 else SPMImageProcessorPil
    return processor_class(
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BILINEAR,
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        image_mean=mean,
        image_std=std,
        do_convert_rgb=len(mean) == 3,
    )


def _statistics(name: str, values) -> list[float]:
    """Per-channel normalisation statistics: 1 (grayscale) or 3 (RGB) finite numbers."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) not in (1, 3):
        raise ValueError(f"{name} must be 1 (grayscale) or 3 (RGB) numbers, got {values!r}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be 1 (grayscale) or 3 (RGB) finite numbers, got {values!r}")
        out.append(float(value))
    return out


def images_to_tensor(image_processor, images) -> torch.Tensor:
    """(N, C, H, W) float32 pixel values for a list of PIL images or HWC uint8 arrays."""
    height, width = image_processor.size["height"], image_processor.size["width"]
    channels = len(image_processor.image_mean)
    if hasattr(images, "convert") or isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise TypeError(f"images must be a list of PIL images or uint8 arrays, got one {type(images).__name__}: "
                        "pass [image]")
    arrays = []
    for position, image in enumerate(images):
        if hasattr(image, "convert"):
            image = image.convert("RGB" if channels == 3 else "L")
        elif not isinstance(image, (np.ndarray, torch.Tensor)):
            raise TypeError(f"images[{position}] must be a PIL image or a uint8 array, got {type(image).__name__}")
        array = np.asarray(image)
        # float arrays would be scaled by 1/255 as if they were bytes: refuse them rather than guess
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise ValueError(
                f"images[{position}] must be a PIL image or a uint8 array (H, W) / (H, W, C), got a {array.dtype} "
                f"array of shape {array.shape}; float pixel values go to the model directly (normalised)"
            )
        arrays.append(array[:, :, None] if array.ndim == 2 else array)
    if not arrays:
        raise ValueError("images is empty: give at least one image")
    if any(a.shape != (height, width, channels) for a in arrays):
        return image_processor(list(images), return_tensors="pt")["pixel_values"]
    return normalize_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), image_processor)


def normalize_uint8(images: torch.Tensor, image_processor) -> torch.Tensor:
    """(N, C, H, W) uint8 -> normalised float32, as the processor would: resized (bilinear, antialiased) to
    its `size` first where the images differ from it (e.g. 32x32 CIFAR images for a 224x224 backbone)."""
    channels = len(image_processor.image_mean)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        kind = f"a {images.dtype} tensor" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"normalize_uint8 takes a uint8 tensor (N, {channels}, H, W) of raw pixels, got {kind}")
    if images.dim() != 4 or images.shape[1] != channels:
        raise ValueError(
            f"normalize_uint8 takes images of shape (N, {channels}, H, W) (the processor has {channels} channel "
            f"statistics), got {tuple(images.shape)}"
        )
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = images.float().div(255.0)
    size = getattr(image_processor, "size", None) or {}
    target = (size.get("height"), size.get("width"))
    if None not in target and tuple(pixels.shape[2:]) != target:
        pixels = F.interpolate(pixels, size=target, mode="bilinear", align_corners=False, antialias=True)
    return (pixels - mean.to(images.device)) / std.to(images.device)


def normalization_statistics(images: torch.Tensor, chunk_size: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (over every pixel, in [0, 1], rounded to 4 decimals) of
    (N, C, H, W) uint8 training images: the `image_mean` / `image_std` of their processor.

    On the full CIFAR-10 and MNIST training splits this gives the usual constants (`CIFAR10_MEAN`,
    `CIFAR10_STD`, `MNIST_MEAN`, `MNIST_STD`). A constant channel gets a std of 1/255, so that the
    processor still divides by a positive number."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        kind = f"a {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) \
            else type(images).__name__
        raise TypeError(f"normalization_statistics takes (N, C, H, W) uint8 images, got {kind}")
    if images.shape[0] == 0:
        raise ValueError("normalization_statistics needs at least one image")
    # float64 sums per chunk: float32 over 5e7 pixels per channel would lose the fourth decimal
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros(images.shape[1], dtype=torch.float64)
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size].to(torch.float64).div_(255.0)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1 / 255)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


__all__ = ["SPMImageProcessorPil", "load_image_processor", "make_image_processor", "images_to_tensor",
           "normalize_uint8", "normalization_statistics", "CIFAR10_MEAN", "CIFAR10_STD"]

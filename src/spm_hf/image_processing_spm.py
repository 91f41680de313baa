"""Image preprocessing for SPM classifiers.

The processor saved beside an SPM is transformers' own `ViTImageProcessorPil` (PIL backend: no
torchvision needed, and no custom code for Hub users). `images_to_tensor` is the fast path used to
encode whole datasets: for images already at the target size it gives the processor's numbers without
its per-image overhead.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import ViTImageProcessorPil
from transformers.image_utils import PILImageResampling


CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2470, 0.2435, 0.2616]
MNIST_MEAN = [0.1307]
MNIST_STD = [0.3081]


def make_image_processor(
    image_size: int = 32, mean: list[float] | None = None, std: list[float] | None = None
) -> ViTImageProcessorPil:
    """Resize to `image_size` (bilinear), scale to [0, 1], normalise (CIFAR-10 statistics by default).
    One-channel statistics make a grayscale processor (no RGB conversion)."""
    mean = list(mean or CIFAR10_MEAN)
    std = list(std or CIFAR10_STD)
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BILINEAR,
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        image_mean=mean,
        image_std=std,
        do_convert_rgb=len(mean) == 3,
    )


def images_to_tensor(image_processor, images) -> torch.Tensor:
    """(N, C, H, W) float32 pixel values for a list of PIL images or HWC uint8 arrays."""
    height, width = image_processor.size["height"], image_processor.size["width"]
    channels = len(image_processor.image_mean)
    arrays = []
    for image in images:
        if hasattr(image, "convert"):
            image = image.convert("RGB" if channels == 3 else "L")
        array = np.asarray(image)
        arrays.append(array[:, :, None] if array.ndim == 2 else array)
    if any(a.shape != (height, width, channels) for a in arrays):
        return image_processor(list(images), return_tensors="pt")["pixel_values"]
    return normalize_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), image_processor)


def normalize_uint8(images: torch.Tensor, image_processor) -> torch.Tensor:
    """(N, C, H, W) uint8 -> normalised float32, as the processor would."""
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float().div(255.0) - mean.to(images.device)) / std.to(images.device)


__all__ = ["make_image_processor", "images_to_tensor", "normalize_uint8", "CIFAR10_MEAN", "CIFAR10_STD"]

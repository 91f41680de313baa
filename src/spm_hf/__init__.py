"""spm_hf: deep semi-parametric models for machine unlearning, as Hugging Face models.

Importing the package registers the classifier with transformers' Auto classes (in-process) and marks
its classes for `register_for_auto_class`, so saved folders also load with `trust_remote_code=True`
where spm_hf is not installed.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from .configuration_spm import ENCODER_PRESETS, SPMConfig
from .hub import FolderChangedError, RepoChangedError
from .image_processing_spm import SPMImageProcessorPil, images_to_tensor, make_image_processor
from .ledger import LedgerKey, LedgerKeyError
from .memory import (
    ForgetReceipt,
    ForgetRequestError,
    MemoryIntegrityError,
    MemoryShapeError,
    ReingestionError,
    SampleMemory,
    UnknownClassError,
    UnknownIdError,
    UnknownKeyError,
)
from .modeling_spm import SPMForImageClassification, SPMImageClassifierOutput


__version__ = "0.1.0"

# The generator lives in diffusers; import it only when asked for, so `import spm_hf` stays light.
_GENERATION_EXPORTS = (
    "ForgottenClassError",
    "ForgottenClassWarning",
    "ImageSampleMemory",
    "SPMDiffusionPipeline",
    "SPMUNet2DModel",
)


def __getattr__(name):
    if name in _GENERATION_EXPORTS:
        from . import generation

        return getattr(generation, name)
    raise AttributeError(f"module 'spm_hf' has no attribute {name!r}")


AutoConfig.register(SPMConfig.model_type, SPMConfig, exist_ok=True)
AutoModelForImageClassification.register(SPMConfig, SPMForImageClassification, exist_ok=True)
SPMConfig.register_for_auto_class()
SPMForImageClassification.register_for_auto_class("AutoModelForImageClassification")
# 1-channel models' processor (RGB models use transformers' ViTImageProcessorPil): found by name in-process,
# copied beside the weights for `trust_remote_code` elsewhere
AutoImageProcessor.register(SPMConfig, image_processor_classes={"pil": SPMImageProcessorPil}, exist_ok=True)
SPMImageProcessorPil.register_for_auto_class("AutoImageProcessor")

__all__ = [
    *_GENERATION_EXPORTS,
    "ENCODER_PRESETS",
    "ForgetReceipt",
    "ForgetRequestError",
    "FolderChangedError",
    "LedgerKey",
    "LedgerKeyError",
    "MemoryIntegrityError",
    "MemoryShapeError",
    "ReingestionError",
    "RepoChangedError",
    "SPMConfig",
    "SPMForImageClassification",
    "SPMImageClassifierOutput",
    "SPMImageProcessorPil",
    "images_to_tensor",
    "make_image_processor",
    "SampleMemory",
    "UnknownClassError",
    "UnknownIdError",
    "UnknownKeyError",
]

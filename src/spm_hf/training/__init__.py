"""Training: episodic support sampling (shared by both model kinds) and the training entry points."""

from .episodic import EpisodicCollator, EpisodicSupportSampler, Episode, IndexDataset, random_crop_flip


__all__ = ["Episode", "EpisodicCollator", "EpisodicSupportSampler", "IndexDataset", "random_crop_flip"]

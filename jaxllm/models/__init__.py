"""Flax NNX model definitions (one file per architecture family), the attention metadata and the sampler."""

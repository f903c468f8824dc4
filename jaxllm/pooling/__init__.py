"""Pooling models (``LLM(runner="pooling")``): embed, classify, score, reward and encode.

Decoders (Llama / Mistral / Qwen2 / Qwen3 backbones) pool on the paged engine as prefill-only requests
(``runner.PoolingModelRunner``); BERT-style encoders run whole sequences on a dense bidirectional path
(``encoder_runner``). This package's ``__init__`` stays free of jax: the engine imports its output types.
"""

"""Where a model comes from: the embedded default, a local folder or GGUF file, or a HF hub id.

Returns a local path; a hub id is resolved with ``huggingface_hub`` (downloads when online, the local cache
when offline, honoring ``revision``).
"""

from __future__ import annotations

import json
import os

from jaxllm.config import ModelConfig
from jaxllm.weights.gguf import GGUFCheckpoint, is_gguf


def resolve_model_path(model: str | os.PathLike, revision: str | None = None) -> str:
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a path or a hub id (str), got {type(model).__name__}")
    model = os.fspath(model)
    from jaxllm.default_model import resolve_default_model

    default = resolve_default_model(model)
    if default is not None:
        return default
    expanded = os.path.expanduser(model)
    if os.path.exists(expanded):
        return expanded
    return _download_from_hub(model, revision)


def _download_from_hub(repo_id: str, revision: str | None) -> str:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency of transformers
        raise ValueError(f"model {repo_id!r} is not a local path and huggingface_hub is not installed") from e
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except Exception as e:
        raise ValueError(f"model {repo_id!r} is neither a local path nor available from the HF hub or its "
                         f"local cache (revision={revision!r}): {type(e).__name__}: {e}") from None


def hf_config_dict(path: str) -> dict:
    """config.json contents (or the GGUF's equivalent)."""
    if is_gguf(path):
        return GGUFCheckpoint(path).hf_config
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path!r} has no config.json: not a HF checkpoint folder")
    with open(cfg_path) as f:
        return json.load(f)


def model_config(path: str, dtype="auto", quantization: str | None = None,
                 enable_expert_parallel: bool = False) -> ModelConfig:
    cfg = ModelConfig.from_hf(hf_config_dict(path), dtype=dtype, quantization=quantization)
    return cfg.with_expert_parallel(enable_expert_parallel)

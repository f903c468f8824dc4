"""Where a model comes from: the embedded default, a local folder or GGUF file, or a HF hub id.

Returns a local path; a hub id is resolved with ``huggingface_hub`` (downloads when online, the local cache
when offline, honoring ``revision``).
"""

from __future__ import annotations

import json
import os

from jaxllm.weights.gguf import GGUFCheckpoint, is_gguf


def resolve_model_path(model: str | os.PathLike, revision: str | None = None, *, token: bool | str | None = None,
                       cache_dir: str | None = None) -> str:
    """A local path for ``model``; a hub id is downloaded (``token``: vLLM's hf_token, ``cache_dir``: its
    download_dir, None = the HF cache)."""
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
    return _download_from_hub(model, revision, token, cache_dir)


def _download_from_hub(repo_id: str, revision: str | None, token: bool | str | None, cache_dir: str | None) -> str:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency of transformers
        raise ValueError(f"model {repo_id!r} is not a local path and huggingface_hub is not installed") from e
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=patterns, token=token,
                                 cache_dir=cache_dir)
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

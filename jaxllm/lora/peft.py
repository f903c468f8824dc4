"""Strict loading of PEFT LoRA adapters (``adapter_config.json`` + ``adapter_model.safetensors``) into our layout.

PEFT stores, per adapted projection, ``lora_A`` [r, in] and ``lora_B`` [out, r] under keys like
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``; the update is scale * B @ A with scale =
lora_alpha / r (lora_alpha / sqrt(r) with ``use_rslora``). We keep a [*in, r] and b = scale * B^T [r, *out]
(jaxllm/lora/layout.py), in the LoRA dtype, on the host. Anything we would silently get wrong is an error that
names it: a missing file, a rank above ``max_lora_rank``, a target module we do not adapt, a key we do not know,
a shape that does not match the base model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re

import numpy as np

from jaxllm.lora.layout import TARGETS, target_dims
from jaxllm.weights.safetensors_reader import SafetensorsFile

logger = logging.getLogger("jaxllm")

_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$")
# adapter_config.json options that change the computation in ways we do not implement
_UNSUPPORTED = ("use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save")


@dataclasses.dataclass
class LoRAAdapter:
    """A loaded adapter: ``weights[(layer, target)] = (a [*in, r], b [r, *out])`` with the scale folded in b."""

    lora_int_id: int
    rank: int
    scale: float
    weights: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.weights.values())


def read_adapter_config(path: str, max_lora_rank: int) -> tuple[int, float]:
    """Validate ``adapter_config.json`` in ``path``; -> (rank, scale)."""
    cfg_path = os.path.join(path, "adapter_config.json")
    if not os.path.isdir(path):
        raise ValueError(f"LoRA adapter path {path!r} is not a folder")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"LoRA adapter {path!r} has no adapter_config.json")
    with open(cfg_path) as f:
        try:
            conf = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
    if conf.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{cfg_path}: peft_type={conf['peft_type']!r}; only LORA adapters are supported")
    for key in _UNSUPPORTED:
        if conf.get(key):  # set to anything but false / empty
            raise ValueError(f"{cfg_path}: {key}={conf[key]!r} is not supported")
    if conf.get("bias", "none") != "none":
        raise ValueError(f"{cfg_path}: bias={conf['bias']!r} is not supported (only 'none')")
    rank, alpha = conf.get("r"), conf.get("lora_alpha", conf.get("r"))
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{cfg_path}: r={rank!r} must be a positive int")
    if rank > max_lora_rank:
        raise ValueError(f"LoRA rank {rank} of {path!r} is greater than max_lora_rank={max_lora_rank}; raise "
                         f"max_lora_rank")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"{cfg_path}: lora_alpha={alpha!r} must be a number")
    targets = conf.get("target_modules")
    if isinstance(targets, (list, tuple)):
        unknown = sorted({t.rsplit(".", 1)[-1] for t in targets} - set(TARGETS))
        if unknown:
            raise ValueError(f"{cfg_path}: target_modules {unknown} are not supported; LoRA adapts "
                             f"{', '.join(TARGETS)}")
    scale = alpha / math.sqrt(rank) if conf.get("use_rslora") else alpha / rank
    return rank, float(scale)


def adapter_folder(lora_path: str) -> str:
    """The local folder of ``lora_path``, found as vLLM finds it: an absolute path as it is, ``~`` expanded, an
    existing relative path made absolute, anything else a HF hub repo id (downloaded, or read from the local
    cache when offline)."""
    if os.path.isabs(lora_path):
        return lora_path
    if lora_path.startswith("~"):
        return os.path.expanduser(lora_path)
    if os.path.exists(lora_path):
        return os.path.abspath(lora_path)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(lora_path, allow_patterns=["*.json", "*.safetensors", "*.bin"])
    except (ImportError, OSError, ValueError) as e:  # the hub's errors are OSErrors, a bad repo id a ValueError
        raise ValueError(f"LoRA adapter path {lora_path!r} is not a folder, and not a HF hub repo id that can be "
                         f"downloaded or found in the local cache ({type(e).__name__}: {e})") from None


def load_peft_adapter(path: str, lora_int_id: int, model_cfg, max_lora_rank: int, dtype,
                      base_model_path: str | None = None) -> LoRAAdapter:
    """Read and check one PEFT adapter (``path``: see ``adapter_folder``) for the base model ``model_cfg``;
    arrays in ``dtype`` on the host."""
    path = adapter_folder(path)
    rank, scale = read_adapter_config(path, max_lora_rank)
    _check_base_model(path, base_model_path)
    weights_path = os.path.join(path, "adapter_model.safetensors")
    if not os.path.isfile(weights_path):
        other = " (only adapter_model.bin: save it with safetensors)" if os.path.isfile(
            os.path.join(path, "adapter_model.bin")) else ""
        raise ValueError(f"LoRA adapter {path!r} has no adapter_model.safetensors{other}")
    file = SafetensorsFile(weights_path)
    halves: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for name in file.names():
        m = _KEY.match(name)
        if m is None:
            raise ValueError(f"{weights_path}: unknown tensor {name!r} (expected base_model.model.model.layers"
                             f".<i>.(self_attn|mlp).<target>.lora_(A|B).weight)")
        layer, target, half = int(m.group(1)), m.group(2), m.group(3)
        if target not in TARGETS:
            raise ValueError(f"{weights_path}: {name!r} adapts {target!r}; LoRA adapts {', '.join(TARGETS)}")
        if layer >= model_cfg.num_layers:
            raise ValueError(f"{weights_path}: {name!r} is for layer {layer} but the base model has "
                             f"{model_cfg.num_layers} layers")
        halves.setdefault((layer, target), {})[half] = np.asarray(file.tensor(name), np.float32)
    weights = {}
    for (layer, target), pair in sorted(halves.items()):
        weights[(layer, target)] = _convert(weights_path, layer, target, pair, rank, scale, model_cfg, dtype)
    if not weights:
        raise ValueError(f"{weights_path}: no LoRA weights")
    return LoRAAdapter(lora_int_id, rank, scale, weights)


def _convert(where, layer, target, pair, rank, scale, model_cfg, dtype):
    """PEFT's lora_A [r, in] / lora_B [out, r] -> our a [*in, r] / b [r, *out] (scale folded in b)."""
    for half in "AB":
        if half not in pair:
            raise ValueError(f"{where}: layer {layer} {target} has no lora_{half}")
    in_dims, _, out_dims, _ = target_dims(model_cfg, target)
    n_in, n_out = math.prod(in_dims), math.prod(out_dims)
    for half, got, want in (("A", pair["A"].shape, (rank, n_in)), ("B", pair["B"].shape, (n_out, rank))):
        if got != want:
            raise ValueError(f"{where}: layer {layer} {target}.lora_{half} has shape {tuple(got)}, expected "
                             f"{want} (rank {rank} for this base model: is the adapter for another model?)")
    a = pair["A"].T.reshape(*in_dims, rank)
    b = (scale * pair["B"]).T.reshape(rank, *out_dims)
    return a.astype(dtype), b.astype(dtype)


def _check_base_model(path: str, base_model_path: str | None) -> None:
    """A loose check (names of one model differ between hubs and local copies): warn when the last path
    components of the adapter's base_model_name_or_path and of the model differ. Shapes are checked strictly."""
    if not base_model_path:
        return
    with open(os.path.join(path, "adapter_config.json")) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        return

    def last(p):
        return os.path.basename(os.path.normpath(str(p))).lower()

    if last(base) != last(base_model_path):
        logger.warning("LoRA adapter %r was trained on %r, not on %r", path, base, base_model_path)

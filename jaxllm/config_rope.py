"""Rotary embedding settings read from a HF config (no jax here): ``RopeConfig`` (frozen, hashable) and the
parsing of transformers 4.x (``rope_theta`` / ``rope_scaling``) and 5.x (``rope_parameters``) spellings, Gemma 3's
two ropes (local / global layers), Phi-3's longrope (legacy "su" / "yarn" names) and partial rotary."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from jaxllm.config_dense import OLMO3, olmo3_rope_dicts
from jaxllm.config_families import gemma3_rope_dicts

_ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding settings. ``scaling`` is a sorted tuple of (key, value) pairs (hashable; list values such
    as longrope's ``short_factor`` / ``long_factor`` become tuples)."""

    theta: float = 10000.0
    rope_type: str = "default"
    scaling: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.scaling).get(key, default)

    @property
    def length_dependent(self) -> bool:
        """Whether a sequence's keys are rotated by a rule that depends on its length (longrope, dynamic NTK)."""
        return self.rope_type in ("longrope", "dynamic")

    def length_regime(self, prompt_len: int) -> int:
        """The rotation regime of the keys of a sequence whose prompt has ``prompt_len`` tokens; 0 for every
        length of a length-independent rope and for prompts within ``original_max_position_embeddings``.

        A key at position p of a sequence with prompt length L is rotated for length max(L, p + 1) (transformers'
        cached generation: the prompt in one forward, then one token per forward). Two sequences whose regimes
        are equal rotate every shared position alike, so their blocks are interchangeable: longrope switches once
        (short factors up to the original length, long ones beyond), so all long prompts share one regime (1);
        dynamic NTK's base is a different function of every length beyond the original one, so such a prompt's
        regime is its length. Within the original length both ropes rotate as the plain rope (regime 0), and a
        generated token's rotation depends only on its position."""
        if not self.length_dependent or prompt_len <= int(self.get("original_max_position_embeddings")):
            return 0
        return 1 if self.rope_type == "longrope" else prompt_len


def prefix_cache_regime(ropes: Iterable[RopeConfig | None]) -> Callable[[int], int] | None:
    """A model's rope regime of a prompt length for the prefix cache's hashes (``RopeConfig.length_regime`` of
    its length-dependent ropes, 0 when all are 0); None when no rope depends on the length."""
    dependent = tuple(r for r in ropes if r is not None and r.length_dependent)
    if not dependent:
        return None
    if len(dependent) == 1:
        return dependent[0].length_regime

    def regime(prompt_len: int) -> int:
        regimes = tuple(r.length_regime(prompt_len) for r in dependent)
        return hash(regimes) if any(regimes) else 0
    return regime


def ropes_from_hf(hf: dict[str, Any], arch: str) -> tuple[RopeConfig, RopeConfig | None]:
    """(rope, rope of the sliding layers or None). Gemma 3 has two; Phi-3 names longrope "su" / "yarn" in old
    configs."""
    if arch in ("Gemma3ForCausalLM", OLMO3):
        full, local = gemma3_rope_dicts(hf) if arch != OLMO3 else olmo3_rope_dicts(hf)
        return _rope_from_hf({**hf, "rope_parameters": full, "rope_scaling": None}), \
            _rope_from_hf({**hf, "rope_parameters": local, "rope_scaling": None})
    if arch == "Phi3ForCausalLM":
        scaling = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
        if scaling.get("rope_type", scaling.get("type")) in ("su", "yarn"):
            scaling["rope_type"] = "longrope"
            scaling.pop("type", None)
        original = hf.get("original_max_position_embeddings") or 4096  # (Phi3Config's default)
        return _rope_from_hf({**hf, "rope_scaling": scaling, "rope_parameters": None,
                              "original_max_position_embeddings": original}), None
    return _rope_from_hf(hf), None


def rotary_dim_from_hf(hf: dict[str, Any], head_dim: int) -> int:
    """Rotated dims per head (Phi-4-mini rotates 3/4 of each head); 0 when the whole head rotates."""
    factor = float((hf.get("rope_parameters") or {}).get("partial_rotary_factor")
                   or hf.get("partial_rotary_factor") or 1.0)
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"partial_rotary_factor={factor} must be in (0, 1]")
    dim = int(head_dim * factor + 1e-6)  # (truncated as transformers; the epsilon absorbs float error of a ratio)
    if dim % 2:
        raise ValueError(f"partial_rotary_factor={factor} gives an odd rotary dim {dim} (head_dim={head_dim})")
    return 0 if dim == head_dim else dim


def _rope_from_hf(hf: dict[str, Any]) -> RopeConfig:
    """Read rope settings from either transformers-5 ``rope_parameters`` or 4.x ``rope_theta``/``rope_scaling``."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    merged = {**scaling, **params}
    theta = float(merged.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = merged.pop("rope_type", None) or merged.pop("type", None) or "default"
    merged.pop("type", None)
    if rope_type not in _ROPE_TYPES:
        raise ValueError(f"rope type {rope_type!r} is not supported; supported: {', '.join(_ROPE_TYPES)}")
    _set_original_length(merged, rope_type, hf)
    if rope_type == "longrope":
        _check_longrope(merged, hf)
    elif rope_type == "yarn" and merged.get("factor") is None:  # (transformers: the ratio of the two lengths)
        merged["factor"] = int(hf.get("max_position_embeddings", 2048)) / merged["original_max_position_embeddings"]
    elif rope_type != "default":  # (as transformers' rope validation: linear / dynamic / llama3 need a factor)
        factor = merged.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < float("inf"):
            raise ValueError(f"{rope_type} rope scaling needs a positive 'factor', got {factor!r}")
    merged = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}
    items = tuple(sorted((k, v) for k, v in merged.items() if isinstance(v, (int, float, str, bool, tuple))))
    return RopeConfig(theta=theta, rope_type=rope_type, scaling=items)


def _set_original_length(params: dict[str, Any], rope_type: str, hf: dict[str, Any]) -> None:
    """``original_max_position_embeddings`` as transformers reads it: dynamic NTK grows past
    ``max_position_embeddings``; llama3 / yarn / longrope take a top-level ``original_max_position_embeddings``
    first (Phi-3's configs keep it there; Phi3Config's default is 4096), else the rope dict's, else
    ``max_position_embeddings``."""
    max_len = int(hf.get("max_position_embeddings", 2048))
    if rope_type == "dynamic":
        params["original_max_position_embeddings"] = max_len
    elif rope_type in ("llama3", "yarn", "longrope"):
        top = hf.get("original_max_position_embeddings")
        if top is not None:
            params["original_max_position_embeddings"] = int(top)
        params.setdefault("original_max_position_embeddings", max_len)


def _check_longrope(params: dict[str, Any], hf: dict[str, Any]) -> None:
    """longrope needs both factor lists; ``factor`` defaults to max / original max positions (as transformers)."""
    for key in ("short_factor", "long_factor"):
        if not isinstance(params.get(key), (list, tuple)):
            raise ValueError(f"longrope rope scaling needs a list {key!r}, got {params.get(key)!r}")  # noqa: TRY004
    if params.get("factor") is None:
        params["factor"] = int(hf.get("max_position_embeddings", 2048)) / params["original_max_position_embeddings"]

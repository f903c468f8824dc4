"""The small checks ``jaxllm.engine_args.EngineArgs.validate`` is made of: each raises a TypeError / ValueError
that names the keyword (or the environment variable) and the offending value."""

from __future__ import annotations

from typing import Any

# torch.compile's levels / modes in vLLM: only "compile everything" has a counterpart (every step is one XLA
# program); 3 is vLLM's default (VLLM_COMPILE / PIECEWISE).
COMPILE_LEVELS = (3, "VLLM_COMPILE")


def check_positive_int(name: str, value: Any, optional: bool = False, minimum: int = 1) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple, note: str = "") -> None:
    if not any(value == c and type(value) is type(c) for c in choices):
        shown = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not supported; choose one of {shown}{' ' + note if note else ''}")


def parse_env_choice(var: str, raw: str, choices: tuple) -> str:
    if raw not in choices:
        raise ValueError(f"{var}={raw!r} is not supported; choose one of {sorted(choices)}")
    return raw


def check_compilation_config(config: Any, cache_dir: str | None) -> str | None:
    """vLLM's ``compilation_config`` (an int level or a dict) against what jaxllm can mean by it; returns the
    compilation cache folder (``compilation_config["cache_dir"]`` when given). Every step is one XLA program,
    compiled ahead of time for each bucket unless ``enforce_eager``: the compile level 3 (vLLM's default) is
    what happens; ``cache_dir`` is JAX's persistent cache folder. Anything else is a ValueError."""
    if config is None:
        return cache_dir
    if isinstance(config, int) and not isinstance(config, bool):
        config = {"level": config}
    if not isinstance(config, dict):
        raise TypeError(f"compilation_config must be an int level or a dict, got {type(config).__name__}")
    for key, value in config.items():
        if key in ("level", "mode"):
            if value is not None and value not in COMPILE_LEVELS:
                raise ValueError(f"compilation_config {key}={value!r} is not supported: every step is compiled "
                                 f"whole by XLA, so only {COMPILE_LEVELS} have a meaning here (use "
                                 "enforce_eager=True to compile each shape when it is first used)")
        elif key == "cache_dir":
            if value and cache_dir is not None and cache_dir != value:
                raise ValueError(f"compilation_config cache_dir={value!r} contradicts "
                                 f"compilation_cache_dir={cache_dir!r}")
            cache_dir = value or cache_dir
        else:
            raise ValueError(f"compilation_config[{key!r}] is not supported: jaxllm compiles with XLA; it takes "
                             "'level' / 'mode' (3) and 'cache_dir'")
    return cache_dir


def check_attention_config(config: Any, backend: str | None) -> str | None:
    """vLLM's ``attention_config`` (a dict): its ``backend`` is ``attention_backend``; returns the backend. Other
    keys tune vLLM's CUDA kernels and are a ValueError."""
    if config is None:
        return backend
    if not isinstance(config, dict):
        raise TypeError(f"attention_config must be a dict, got {type(config).__name__}")
    other = sorted(set(config) - {"backend"})
    if other:
        raise ValueError(f"attention_config[{other[0]!r}] is not supported: attention_config takes 'backend' (the "
                         "same as attention_backend)")
    chosen = config.get("backend")
    if chosen is not None and backend is not None and chosen != backend:
        raise ValueError(f"attention_config backend={chosen!r} contradicts attention_backend={backend!r}")
    return backend if chosen is None else chosen

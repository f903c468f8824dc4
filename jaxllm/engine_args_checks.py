"""The small checks ``jaxllm.engine_args.EngineArgs.validate`` is made of: each raises a TypeError / ValueError
that names the keyword (or the environment variable) and the offending value."""

from __future__ import annotations

from typing import Any

# torch.compile's levels / modes in vLLM: only "compile everything" has a counterpart (every step is one XLA
# program); 3 is vLLM's default (VLLM_COMPILE / PIECEWISE).
COMPILE_LEVELS = (3, "VLLM_COMPILE")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values
LORA_DTYPES = ("auto", "float16", "bfloat16", "float32")


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



def value_from_env(keyword: str, var: str, raw: str, choices: tuple | None = None) -> Any:
    """The value of keyword ``keyword`` given by ``$var`` = ``raw``: one of ``choices`` when the keyword has them,
    a bool for ``allow_long_max_model_len``, a folder ("0": none) for the cache folders, else an int >= 0."""
    if keyword == "allow_long_max_model_len":
        return raw.strip().lower() in ("1", "true", "yes")
    if choices is not None:
        return parse_env_choice(var, raw, choices)
    if keyword in ("compilation_cache_dir", "gguf_cache_dir"):
        return "" if raw == "0" else raw  # "0": no cache
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{var}={raw!r} is not supported: {keyword} takes an integer >= 0")
    return value

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


def check_lora_args(args: Any) -> None:
    """The LoRA keywords of an ``EngineArgs`` (docs/lora.md): slot counts, the largest rank, the dtype."""
    check_positive_int("max_loras", args.max_loras)
    check_positive_int("max_cpu_loras", args.max_cpu_loras, optional=True)
    check_choice("max_lora_rank", args.max_lora_rank, LORA_RANKS)
    if args.max_cpu_loras is not None and args.max_cpu_loras < args.max_loras:
        raise ValueError(f"max_cpu_loras ({args.max_cpu_loras}) must be >= max_loras ({args.max_loras})")
    if args.enable_lora and args.data_parallel_size > 1:
        raise ValueError(f"enable_lora=True with data_parallel_size={args.data_parallel_size} is not supported "
                         "yet: LoRA runs on one replica (data_parallel_size=1)")
    dtype = str(getattr(args.lora_dtype, "name", args.lora_dtype)).replace("torch.", "")
    check_choice("lora_dtype", dtype, LORA_DTYPES)


_POOLING_TASKS = ("embed", "embedding", "classify", "score", "reward")


def legacy_task(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with vLLM's deprecated ``task=`` turned into the runner it selects: "generate" ->
    ``runner="generate"``, a pooling task ("embed", "classify", "score", "reward") -> ``runner="pooling"`` (the
    conversion then follows the architecture), "auto" or None -> nothing. A DeprecationWarning says so, as vLLM."""
    if "task" not in kwargs:
        return kwargs
    kwargs = dict(kwargs)
    task = kwargs.pop("task")
    if task is None or task == "auto":
        return kwargs
    if task != "generate" and task not in _POOLING_TASKS:
        raise ValueError(f"task={task!r} is not supported; choose 'auto', 'generate' or one of {_POOLING_TASKS}")
    runner = "generate" if task == "generate" else "pooling"
    if kwargs.get("runner", "auto") not in ("auto", runner):
        raise ValueError(f"task={task!r} selects runner={runner!r}, but runner={kwargs['runner']!r} was passed")
    import warnings

    warnings.warn(f"task is deprecated (as in vLLM): pass runner={runner!r} instead of task={task!r}",
                  DeprecationWarning, stacklevel=4)
    kwargs["runner"] = runner
    return kwargs

"""EngineArgs: every keyword of ``LLM(...)`` (vLLM's names and defaults), typed and validated in one place before
anything loads, with the ``JAXLLM_*`` environment variables (read by ``jaxllm.envs``) as the documented defaults
of the kernel and cache choices. docs/settings.md lists every field; docs/vllm_compat.md maps vLLM's names.

``EngineArgs.from_kwargs(kwargs)`` is what ``LLM`` and ``jaxllm.load_model`` call: a known vLLM keyword that
jaxllm does not implement is a ValueError saying why (``jaxllm.unsupported_args``), an unknown name a TypeError.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from jaxllm import envs
from jaxllm.default_model import DEFAULT_MODEL
from jaxllm.engine_args_checks import (
    check_attention_config,
    check_bool,
    check_choice,
    check_compilation_config,
    check_lora_args,
    check_positive_int,
    legacy_task,
    value_from_env,
)
from jaxllm.engine_args_resolve import (
    BACKGROUND_STARTUP_TOKENS,
    POOLING_MAX_NUM_BATCHED_TOKENS,
    derived_max_model_len,
    resolve_args,
)
from jaxllm.host_memory import DEFAULT_SWAP_SPACE, check_host_tier
from jaxllm.sampling_params import MAX_LOGPROBS  # vLLM's default max_logprobs
from jaxllm.spec_decode import SpeculativeConfig
from jaxllm.tokenizer import TOKENIZER_MODES
from jaxllm.unsupported_args import UNSUPPORTED, check_unsupported
from jaxllm.weights.inflight import DEFAULT_INFLIGHT_BYTES

# Re-exported here, their import path: the defaults resolve_args fills in, and the host tier's default size.
__all__ = ["BACKGROUND_STARTUP_TOKENS", "DEFAULT_SWAP_SPACE", "POOLING_MAX_NUM_BATCHED_TOKENS", "EngineArgs",
           "derived_max_model_len"]

LOAD_FORMATS = ("auto", "safetensors", "gguf", "dummy")
# "auto" = the model's dtype; the fp8 ones store the paged KV cache in float8 ("fp8" = e4m3, as vLLM),
# per-layer scales 1.0 (jaxllm.ops.paged_attention.kv_cache: the same names, mapped to dtypes).
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
RUNNERS = ("auto", "generate", "pooling")
CONVERTS = ("auto", "none", "embed", "classify", "reward")
BLOCK_SIZES = (8, 16, 32, 64, 128, 256)
SCHEDULING_POLICIES = ("fcfs", "priority")
DISTRIBUTED_EXECUTOR_BACKENDS = (None, "uni", "mp", "external_launcher")  # docs/multi_host.md
CONFIG_FORMATS = ("auto", "hf")
LOGPROBS_MODES = ("raw_logprobs", "raw_logits", "processed_logprobs", "processed_logits")  # vLLM's
# Kernel choices (the names of the ops' dispatchers; tests/test_settings.py checks they match).
ATTENTION_BACKENDS = ("reference", "chunked", "pallas_triton", "pallas_mosaic")
QUANT_MATMUL_IMPLS = ("reference", "pallas_triton", "mosaic_gpu")
MOE_MATMUL_IMPLS = ("reference", "ragged_dot", "pallas_triton")  # ops/grouped_matmul
INT4_KERNEL_VARIANTS = ("gather", "split", "joined")
FP8_ACTIVATION_MODES = ("auto", "none", "dynamic")
ATTENTION_FP8_DOTS = ("auto", "q", "f16")
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "jaxllm", "xla")
DEFAULT_GGUF_CACHE_DIR = os.path.join("~", ".cache", "jaxllm", "gguf")
_CHOICES = {"attention_backend": ATTENTION_BACKENDS, "quant_matmul_impl": QUANT_MATMUL_IMPLS,
            "moe_matmul_impl": MOE_MATMUL_IMPLS,
            "int4_kernel_variant": INT4_KERNEL_VARIANTS, "fp8_activations": FP8_ACTIVATION_MODES,
            "attention_fp8_dot": ATTENTION_FP8_DOTS}


@dataclasses.dataclass
class EngineArgs:
    """The keywords of ``LLM`` (vLLM names). ``None`` means "derive a default" (see docs/settings.md)."""

    # -- model, tokenizer, download --
    model: str | os.PathLike = DEFAULT_MODEL
    served_model_name: str | list[str] | None = None
    runner: str = "auto"
    convert: str = "auto"  # vLLM's model conversion for runner="pooling" (jaxllm.pooling.config.check_convert)
    tokenizer: str | None = None
    tokenizer_mode: str = "auto"
    skip_tokenizer_init: bool = False
    enable_prompt_embeds: bool = False  # EmbedsPrompt inputs ({"prompt_embeds": [T, hidden_size]}) in generate
    trust_remote_code: bool = False
    revision: str | None = None
    tokenizer_revision: str | None = None
    code_revision: str | None = None
    hf_token: bool | str | None = None
    download_dir: str | None = None
    config_format: str = "auto"
    hf_overrides: dict[str, Any] | Any = None  # a dict merged into config.json, or a callable on the HF config
    hf_config_path: str | None = None  # the HF config (folder or hub id) to use instead of the model's (a GGUF's)
    rope_scaling: dict[str, Any] | None = None
    rope_theta: float | None = None
    pooler_config: Any = None  # pooling models: a dict or jaxllm.PoolerConfig overriding the checkpoint's pooling
    generation_config: str = "auto"  # "auto" (the model's), "vllm" (SamplingParams' defaults) or a folder
    override_generation_config: dict[str, Any] | None = None
    # -- weights --
    dtype: Any = "auto"
    quantization: str | None = None
    load_format: str = "auto"
    seed: int = 0
    # -- devices and memory --
    tensor_parallel_size: int = 1
    enable_expert_parallel: bool = False  # MoE models: whole experts per device, not a slice of each (models/moe.py)
    data_parallel_size: int = 1  # engine replicas, each on its own tensor_parallel_size devices
    distributed_executor_backend: str | None = None
    disable_custom_all_reduce: bool = False  # XLA's collectives: there is no custom all-reduce either way
    gpu_memory_utilization: float = 0.9
    # GiB of host memory for KV blocks (preemption by swap, host prefix cache); None: vLLM's 4, or half the
    # free host memory when that is less (an explicit value larger than the free memory is an error)
    swap_space: float | None = None
    preemption_mode: str | None = None  # "recompute", "swap", or None: the cheaper (docs/kv_offload.md)
    host_prefix_cache: bool = False  # evicted prefix blocks go to the swap_space host tier and hit there
    kv_cache_memory_bytes: int | None = None
    num_gpu_blocks_override: int | None = None
    block_size: int = 16
    kv_cache_dtype: str = "auto"
    enable_prefix_caching: bool = True
    enable_sleep_mode: bool = False
    # -- scheduling --
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_chunked_prefill: bool | None = None  # prefills are always chunked to the token budget
    scheduling_policy: str = "fcfs"
    # Schedule step N+1 while step N runs on the device (same outputs; see jaxllm/engine/scheduler.py).
    async_scheduling: bool = True
    # -- LoRA (docs/lora.md): adapters per step, their largest rank, adapters kept in host memory (None:
    # max_loras) and the adapters' dtype ("auto" = the model's) --
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    lora_dtype: Any = "auto"
    # -- outputs --
    max_logprobs: int = MAX_LOGPROBS
    logprobs_mode: str = "raw_logprobs"
    disable_log_stats: bool = True
    # Structured outputs: a dict of StructuredOutputsConfig fields ({"backend": "auto"}) or an instance.
    structured_outputs_config: Any = None
    # -- compilation --
    enforce_eager: bool = False
    max_seq_len_to_capture: int | None = None  # buckets of more tokens are compiled on first use
    # Generation: the programs left out of start-up compile on background threads once the engine is ready,
    # instead of at start-up / on first use. Start-up keeps the buckets up to max_seq_len_to_capture when given,
    # else on a GPU the buckets every step fits (max_num_seqs rows and the largest), on the CPU those up to
    # BACKGROUND_STARTUP_TOKENS (the CPU never compiles the single-filter sampler variants). None: on, except on
    # GPUs of a multi-process engine. Pooling models compile every bucket at start-up.
    background_compile: bool | None = None
    compilation_config: int | dict[str, Any] | None = None
    compilation_cache_dir: str | None = None  # "" disables JAX's persistent compilation cache
    # a GGUF's dequantized float32 tensors, memory-mapped on later loads (jaxllm/weights/gguf_cache.py); "": off
    gguf_cache_dir: str | None = None
    # -- kernels (jaxllm; each has a JAXLLM_* environment override, jaxllm.envs.ENV_VARS) --
    attention_backend: str | None = None  # None: the dispatcher's choice for the device and shapes
    attention_config: dict[str, Any] | None = None  # vLLM's AttentionConfig as a dict: {"backend": ...}
    attention_decode_splits: int | None = None  # None: from the batch and the GPU's SM count
    attention_fp8_dot: str | None = None
    quant_matmul_impl: str | None = None
    int4_kernel_variant: str | None = None
    moe_matmul_impl: str | None = None  # MoE experts' grouped matmul; None: Pallas on NVIDIA GPUs, else ragged_dot
    fp8_activations: str | None = None
    load_inflight_bytes: int | None = None
    # a max_model_len above the model's context (vLLM: the VLLM_ALLOW_LONG_MAX_MODEL_LEN variable)
    allow_long_max_model_len: bool | None = None
    # -- speculative decoding --
    # vLLM's dict, e.g. {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}; validated as
    # a jaxllm.spec_decode.SpeculativeConfig (docs/spec_decode.md)
    speculative_config: Any = None

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> EngineArgs:
        """Validated args from ``LLM``'s keywords (environment defaults applied)."""
        kwargs = legacy_task(kwargs)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names - set(UNSUPPORTED))
        if unknown:
            raise TypeError(f"LLM() got unexpected keyword argument(s): {', '.join(unknown)}; supported engine "
                            f"arguments: {', '.join(sorted(names))}")
        check_unsupported({k: v for k, v in kwargs.items() if k not in names})
        args = cls(**{k: v for k, v in kwargs.items() if k in names})
        args.apply_env()
        args.validate()
        return args

    def apply_env(self) -> None:
        """Fill the kernel / cache keywords left at None from their ``JAXLLM_*`` variables."""
        for keyword, var in envs.KEYWORD_ENV.items():
            raw = envs.get(var)
            if getattr(self, keyword) is None and raw is not None:
                setattr(self, keyword, value_from_env(keyword, var, raw, _CHOICES.get(keyword)))

    def validate(self) -> None:
        """TypeError / ValueError naming the first bad keyword (nothing is loaded yet)."""
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks_override",
                     "kv_cache_memory_bytes", "max_seq_len_to_capture", "attention_decode_splits"):
            check_positive_int(name, getattr(self, name), optional=True)
        check_positive_int("tensor_parallel_size", self.tensor_parallel_size)
        check_positive_int("data_parallel_size", self.data_parallel_size)
        if self.data_parallel_size > 1 and self.enable_sleep_mode:
            raise ValueError("enable_sleep_mode=True is not supported with data_parallel_size > 1 yet")
        check_positive_int("block_size", self.block_size)
        check_positive_int("max_logprobs", self.max_logprobs, minimum=-1)  # -1: the whole vocabulary (vLLM)
        check_positive_int("load_inflight_bytes", self.load_inflight_bytes, optional=True, minimum=0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        for name in ("enable_prefix_caching", "async_scheduling", "skip_tokenizer_init", "trust_remote_code",
                     "enforce_eager", "disable_log_stats", "disable_custom_all_reduce", "enable_sleep_mode",
                     "enable_lora", "enable_expert_parallel", "enable_prompt_embeds"):
            check_bool(name, getattr(self, name))
        for name in ("allow_long_max_model_len", "background_compile"):
            if getattr(self, name) is not None:
                check_bool(name, getattr(self, name))
        check_lora_args(self)
        check_choice("runner", self.runner, RUNNERS)
        check_choice("convert", self.convert, CONVERTS)
        check_choice("block_size", self.block_size, BLOCK_SIZES)
        check_choice("kv_cache_dtype", self.kv_cache_dtype, KV_CACHE_DTYPES,
                     "('auto' = the model's dtype, 'fp8' = 'fp8_e4m3')")
        check_choice("load_format", self.load_format, LOAD_FORMATS)
        check_choice("tokenizer_mode", self.tokenizer_mode, TOKENIZER_MODES)
        check_choice("config_format", self.config_format, CONFIG_FORMATS, "(Mistral-format params.json is "
                     "not read)")
        check_choice("logprobs_mode", self.logprobs_mode, LOGPROBS_MODES)
        check_choice("scheduling_policy", self.scheduling_policy, SCHEDULING_POLICIES)
        check_choice("distributed_executor_backend", self.distributed_executor_backend,
                     DISTRIBUTED_EXECUTOR_BACKENDS, "(one process drives every local device with JAX; "
                     "'external_launcher': every process runs the same script under jax.distributed; Ray is not "
                     "supported)")
        self.attention_backend = check_attention_config(self.attention_config, self.attention_backend)
        for name, choices in _CHOICES.items():
            check_choice(name, getattr(self, name), (None, *choices))
        self._validate_memory_and_outputs()
        SpeculativeConfig.from_dict(self.speculative_config)  # the engine and the runner read the dict
        from jaxllm.structured_outputs.params import StructuredOutputsConfig

        StructuredOutputsConfig.coerce(self.structured_outputs_config)  # checked here, used by the engine
        self.compilation_cache_dir = check_compilation_config(self.compilation_config, self.compilation_cache_dir)

    def _validate_memory_and_outputs(self) -> None:
        from jaxllm.quantization_config import GGUF_QUANTIZATION, check_quantization

        if self.quantization != GGUF_QUANTIZATION:  # "gguf": a GGUF model's own types (checked in jaxllm/load.py)
            check_quantization(self.quantization)
        gmu = self.gpu_memory_utilization
        if isinstance(gmu, bool) or not isinstance(gmu, (int, float)) or not 0 < gmu <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gmu!r}")
        check_host_tier(self)
        if self.enable_chunked_prefill is False:
            raise ValueError("enable_chunked_prefill=False is not supported: the scheduler always splits long "
                             "prefills to the max_num_batched_tokens budget")
        from jaxllm.pooling.config import PoolerConfig

        PoolerConfig.of(self.pooler_config)  # validated here, read by the pooling model (kept as given)
        if self.hf_config_path is not None and not isinstance(self.hf_config_path, (str, os.PathLike)):
            raise TypeError(f"hf_config_path must be a folder or hub id, got {type(self.hf_config_path).__name__}")
        if self.hf_overrides is not None and not (isinstance(self.hf_overrides, dict) or callable(self.hf_overrides)):
            raise TypeError(f"hf_overrides must be a dict or a callable, got {type(self.hf_overrides).__name__}")
        served = self.served_model_name
        if served is not None and not (isinstance(served, str) or (
                isinstance(served, (list, tuple)) and all(isinstance(n, str) for n in served))):
            raise TypeError(f"served_model_name must be a str or a list of str, got {served!r}")
        for name in ("rope_scaling", "override_generation_config"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {getattr(self, name)!r}")
        if not isinstance(self.generation_config, (str, os.PathLike)):
            raise TypeError(f"generation_config must be 'auto', 'vllm' or a folder, got {self.generation_config!r}")

    @property
    def model_name(self) -> str:
        """The name the model is reported under (metrics labels): the first ``served_model_name``, else ``model``
        (an in-memory module: its class name)."""
        served = self.served_model_name
        if isinstance(served, (list, tuple)):
            served = served[0] if served else None
        if served:
            return served
        return os.fspath(self.model) if isinstance(self.model, (str, os.PathLike)) else type(self.model).__name__

    @property
    def inflight_bytes(self) -> int:
        return DEFAULT_INFLIGHT_BYTES if self.load_inflight_bytes is None else self.load_inflight_bytes

    @property
    def cache_dir(self) -> str | None:
        """The persistent compilation cache folder, or None when disabled."""
        where = DEFAULT_CACHE_DIR if self.compilation_cache_dir is None else self.compilation_cache_dir
        return os.path.expanduser(where) if where else None

    @property
    def gguf_cache(self) -> str | None:
        """The dequantized-GGUF cache folder, or None when disabled."""
        where = DEFAULT_GGUF_CACHE_DIR if self.gguf_cache_dir is None else self.gguf_cache_dir
        return os.path.expanduser(where) if where else None

    def config_overrides(self) -> dict[str, Any]:
        """The dict part of the HF config changes (rope_scaling / rope_theta, then a dict hf_overrides)."""
        out: dict[str, Any] = {}
        if self.rope_scaling is not None:
            out["rope_scaling"] = dict(self.rope_scaling)
        if self.rope_theta is not None:
            out["rope_theta"] = float(self.rope_theta)
        if isinstance(self.hf_overrides, dict):
            out.update(self.hf_overrides)
        return out

    def resolve(self, platform: str, model_max_len: int, pooling: bool = False,
                num_processes: int = 1) -> EngineArgs:
        """A copy with the defaults that depend on the device and the model filled in
        (``jaxllm.engine_args_resolve.resolve_args``)."""
        return resolve_args(self, platform, model_max_len, pooling, num_processes)

"""The one load path from validated ``EngineArgs`` to a model on the devices, shared by ``LLM`` and
``jaxllm.load_model`` (the research API: a Flax NNX module you can call on token ids)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from jaxllm.config import ModelConfig
from jaxllm.engine_args import EngineArgs
from jaxllm.model_source import hf_config_dict, model_config, resolve_model_path
from jaxllm.quantization_config import GGUF_QUANTIZATION
from jaxllm.weights.gguf import is_gguf

logger = logging.getLogger("jaxllm")


@dataclasses.dataclass
class ModelSource:
    """Where the weights are and what they are: the local path, the parsed config, the device mesh."""

    path: str
    config: ModelConfig
    mesh: Any
    gguf: bool

    def on_mesh(self, mesh) -> ModelSource:
        """The same weights placed on another mesh (a data-parallel replica's)."""
        return dataclasses.replace(self, mesh=mesh)


def locate_model(args: EngineArgs) -> ModelSource:
    """Resolve ``args.model`` to a local path, read its config (with the overrides) and build the mesh. No
    weight is read; a format mismatch or an unsupported config is a ValueError here."""
    from jaxllm.parallel.sharding import local_meshes

    path = resolve_model_path(args.model, args.revision, token=args.hf_token, cache_dir=args.download_dir)
    gguf = is_gguf(path)
    if args.load_format == "gguf" and not gguf:
        raise ValueError(f"load_format='gguf' but {args.model!r} is not a GGUF file")
    if args.load_format == "safetensors" and gguf:
        raise ValueError(f"load_format='safetensors' but {args.model!r} is a GGUF file")
    if args.quantization == GGUF_QUANTIZATION and not gguf:
        raise ValueError(f"quantization='gguf' but {args.model!r} is not a GGUF file")
    hf = model_hf_config(path, args)
    # vLLM's name for a GGUF file's own block quantization: its tensors are dequantized at load (weights/gguf.py)
    quantization = None if args.quantization == GGUF_QUANTIZATION else args.quantization
    cfg = model_config(path, args.dtype, quantization, hf=hf)
    cfg = dataclasses.replace(cfg, **kernel_fields(args)).with_expert_parallel(args.enable_expert_parallel)
    cfg = cfg.with_mla_cache(args.attention_backend)  # (DeepSeek: the cache layout follows the attention backend)
    return ModelSource(path, cfg, local_meshes(args.tensor_parallel_size, args.data_parallel_size)[0], gguf)


def locate_in_memory_model(args: EngineArgs):
    """(ModelSource, model) for ``args.model`` an NNX module: its own config (with the kernel keywords), its
    parameters checked against the architecture and placed on the serving mesh. Keywords that would change the
    weights (dtype, quantization, a load format) must keep their defaults: the module's own are served."""
    from flax import nnx

    from jaxllm.in_memory import model_from_params, module_config
    from jaxllm.parallel.sharding import local_meshes

    module = args.model
    cfg = module_config(module)
    for name, default in (("dtype", "auto"), ("quantization", None), ("load_format", "auto"), ("hf_overrides", None),
                          ("hf_config_path", None), ("rope_scaling", None), ("rope_theta", None)):
        if getattr(args, name) not in (default, cfg.dtype if name == "dtype" else default):
            raise ValueError(f"{name}={getattr(args, name)!r} does not apply to an in-memory model: it is served "
                             "with its own config and parameters")
    if args.tokenizer is None and not args.skip_tokenizer_init:
        raise ValueError("an in-memory model has no tokenizer files: pass tokenizer=<folder or hub id>, or "
                         "skip_tokenizer_init=True to work with token ids")
    cfg = dataclasses.replace(cfg, **kernel_fields(args))
    mesh = local_meshes(args.tensor_parallel_size, args.data_parallel_size)[0]
    model = model_from_params(cfg, nnx.state(module), mesh=mesh)
    return ModelSource(None, cfg, mesh, False), model


def model_hf_config(path: str, args: EngineArgs) -> dict[str, Any]:
    """The model's HF config dict: ``hf_config_path``'s config.json when given (vLLM's way to give a GGUF file
    its base model's config), else the model's own (a GGUF's from its metadata), with the overrides applied."""
    if args.hf_config_path is not None:
        path = resolve_model_path(os.fspath(args.hf_config_path), None, token=args.hf_token,
                                  cache_dir=args.download_dir)
    return apply_hf_overrides(hf_config_dict(path), args)


def apply_hf_overrides(hf: dict[str, Any], args: EngineArgs) -> dict[str, Any]:
    """config.json with ``rope_scaling`` / ``rope_theta`` / a dict ``hf_overrides`` merged in, then a callable
    ``hf_overrides`` applied to it as a ``transformers.PretrainedConfig`` (vLLM's contract). transformers-5
    configs keep the rope settings in ``rope_parameters``, which wins when read: the rope keywords go there too."""
    rope = {**(args.rope_scaling or {}), **({} if args.rope_theta is None else {"rope_theta": float(args.rope_theta)})}
    params = hf.get("rope_parameters")
    hf = {**hf, **args.config_overrides()}
    if rope and isinstance(params, dict):
        hf["rope_parameters"] = {**params, **rope}
    if callable(args.hf_overrides):
        from transformers import PretrainedConfig

        changed = args.hf_overrides(PretrainedConfig(**hf))
        if not isinstance(changed, PretrainedConfig):
            raise TypeError(f"hf_overrides must return the (changed) PretrainedConfig, got {type(changed).__name__}")
        hf = changed.to_dict()
    return hf


def kernel_fields(args: EngineArgs) -> dict[str, Any]:
    """The ModelConfig fields that carry the kernel choices into the layers (read when the model is built)."""
    from jaxllm.models.quant import resolve_fp8_activations

    return {"fp8_activations": resolve_fp8_activations(args.fp8_activations or "auto"),
            "quant_matmul_impl": args.quant_matmul_impl, "int4_kernel_variant": args.int4_kernel_variant,
            "moe_matmul_impl": args.moe_matmul_impl}


def load_tokenizer_for(args: EngineArgs, source: ModelSource):
    """The tokenizer ``args`` ask for (``tokenizer``, else the model's own; a GGUF file's from its metadata), or
    None with ``skip_tokenizer_init``."""
    from jaxllm.tokenizer import load_tokenizer

    if args.skip_tokenizer_init:
        return None
    return load_tokenizer(args.tokenizer or source.path, tokenizer_mode=args.tokenizer_mode,
                          trust_remote_code=args.trust_remote_code, revision=args.tokenizer_revision or args.revision,
                          gguf_source=args.tokenizer is None and source.gguf, token=args.hf_token,
                          cache_dir=args.download_dir, code_revision=args.code_revision)


def grammar_capable_before_loading(args: EngineArgs, source: ModelSource) -> bool | None:
    """``grammar_capable`` of the tokenizer ``load_tokenizer_for`` returns, when known before it loads: a GGUF
    file's own tokenizer is always a fast one (``gguf_tokenizer.build_tokenizer``). None: only the tokenizer
    itself tells."""
    from jaxllm.structured_outputs.grammar import llguidance_installed

    gguf_tokenizer = (not args.skip_tokenizer_init and args.tokenizer is None and source.gguf
                      and args.tokenizer_mode != "mistral")
    return llguidance_installed() if gguf_tokenizer else None


def replica_models(model, args: EngineArgs, source: ModelSource) -> list[tuple[Any, Any]]:
    """(model, mesh) of every data-parallel replica, None for the model of a replica on another process's
    devices (``jax.distributed``). ``model`` is the first local replica's (on ``source.mesh``); other local
    replicas get its parameters copied device to device, so the checkpoint is read once per process (a
    replica that shares devices with other processes reads the checkpoint itself: JAX does not copy
    between hosts)."""
    from flax import nnx

    from jaxllm.parallel.sharding import copy_to_mesh, is_local, replica_meshes

    graphdef, state = nnx.split(model)
    out = []
    for mesh in replica_meshes(args.tensor_parallel_size, args.data_parallel_size):
        if mesh == source.mesh:
            out.append((model, source.mesh))
        elif not is_local(mesh):
            out.append((None, mesh))
        elif not (mesh.is_multi_process or source.mesh.is_multi_process):
            out.append((nnx.merge(graphdef, copy_to_mesh(state, mesh)), mesh))
        else:
            out.append((build_model(args, source.on_mesh(mesh)), mesh))
    return out


def build_model(args: EngineArgs, source: ModelSource):
    """The NNX model on ``source.mesh``: random weights of the real shapes (load_format="dummy") or the
    checkpoint's."""
    from jaxllm.weights.loader import build_dummy_model, load_weights

    t0 = time.perf_counter()
    if args.load_format == "dummy":
        model = build_dummy_model(source.config, source.mesh, args.seed)
    else:
        model = load_weights(source.path, source.config, source.mesh, inflight_bytes=args.inflight_bytes,
                             gguf_cache_dir=args.gguf_cache)
    logger.info("weights ready in %.1f s (%s)", time.perf_counter() - t0, args.load_format)
    return model


def load_model(path: str | os.PathLike, dtype="auto", **kwargs):
    """Load a HF checkpoint folder, GGUF file or hub id into the NNX model.

    ``model(ids)`` with int32 ids [B, T] returns float32 logits [B, T, vocab] (causal, no cache).
    Takes ``LLM``'s model keywords (validated the same way): dtype "auto" (the checkpoint's), "float32",
    "bfloat16" or "float16"; ``tensor_parallel_size``; ``load_format="dummy"`` gives random weights of the real
    shapes (benchmarks); ``quantization``: None (the checkpoint's own ``quantization_config``, if any), "int8" or
    "fp8" (the decoder layers' linear weights quantized at load time, weight-only, per output channel; see
    ``jaxllm.models.quant``), or "awq" / "gptq" (4-bit checkpoints; ``jaxllm.models.quant_int4``); ``revision``,
    ``hf_token``, ``download_dir``, ``hf_overrides``, ``seed`` and the kernel keywords of docs/settings.md."""
    args = EngineArgs.from_kwargs({"model": path, "dtype": dtype, **kwargs})
    if args.enable_lora:
        raise ValueError("enable_lora=True is an LLM keyword: load_model returns the base model (LoRA adapters are "
                         "served by LLM.generate with a lora_request)")
    return build_model(args, locate_model(args))


def load_draft_model(args: EngineArgs, target: ModelConfig, mesh):
    """(draft NNX model on ``mesh``, its ModelConfig) for ``speculative_config={"method": "draft_model",
    "model": PATH}``, through the same path as the target: the target's dtype and mesh; the target's keywords
    that describe the target's own checkpoint (quantization, overrides, tokenizer) do not apply; random weights
    of the draft's shapes when the target has them (load_format="dummy", benchmarks)."""
    from jaxllm.spec_decode import SpeculativeConfig

    spec = SpeculativeConfig.from_dict(args.speculative_config)
    draft_args = dataclasses.replace(
        args, model=spec.model, dtype=target.dtype, quantization=None, hf_overrides=None, hf_config_path=None,
        rope_scaling=None,
        rope_theta=None, tokenizer=None, revision=None, speculative_config=None, enable_lora=False,
        load_format="dummy" if args.load_format == "dummy" else "auto")
    source = locate_model(draft_args).on_mesh(mesh)
    return build_model(draft_args, source), source.config

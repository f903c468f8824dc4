"""vLLM ``LLM`` / ``EngineArgs`` keywords that jaxllm does not implement: each one with the values that mean "off"
(accepted: they ask for nothing jaxllm does not do) and the reason any other value is a ValueError.

A script ported from vLLM that passes one of these at its "off" value runs unchanged; one that asks for the
feature fails at construction with the keyword's name and why, before anything loads. A name neither here nor
an ``EngineArgs`` field is a TypeError, as for any Python function.
"""

from __future__ import annotations

from typing import Any

_MULTIMODAL = "multimodal inputs are not supported (the supported models are text-only)"
_LORA = "LoRA adapters are supported without this option (docs/lora.md)"
_DATA_PARALLEL = ("external data-parallel launchers are not supported: data_parallel_size replicas run in one "
                  "controller per process (docs/data_parallel.md)")
_EXPERT_PARALLEL = ("expert parallelism's load balancer (redundant experts) is not supported yet; "
                    "enable_expert_parallel=True splits the experts evenly")
_TRACING = "request tracing and hidden metrics are not supported"
_PLUGINS = "vLLM's worker, scheduler and connector plug-ins have no jaxllm counterpart"
_PARTIAL_PREFILLS = "the scheduler runs every partial prefill that fits the token budget; it has no separate caps"
_MULTI_NODE = "multi-host serving is not supported yet (docs/multi_host.md)"
_FAULT_TOLERANCE = "engine fault tolerance is not supported (one process, no workers to recover)"
_BUCKETS = ("the step shapes are jaxllm's bucket ladder (from max_num_seqs and max_num_batched_tokens), each "
            "compiled by XLA; max_seq_len_to_capture limits the ones compiled at start-up")

# name -> (values that mean "off", why anything else is refused). None and empty containers are always "off".
UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "allowed_local_media_path": (("",), _MULTIMODAL),
    "allowed_media_domains": ((), _MULTIMODAL),
    "safetensors_load_strategy": (("lazy",), "safetensors files are always memory-mapped and read per shard"),
    "cuda_graph_sizes": ((), _BUCKETS),
    "pipeline_parallel_size": ((1,), "pipeline parallelism is not supported (use tensor_parallel_size)"),
    "decode_context_parallel_size": ((1,), "decode context parallelism is not supported"),
    "data_parallel_rank": ((), _DATA_PARALLEL),
    "data_parallel_start_rank": ((), _DATA_PARALLEL),
    "data_parallel_size_local": ((), _DATA_PARALLEL),
    "data_parallel_address": ((), _DATA_PARALLEL),
    "data_parallel_rpc_port": ((), _DATA_PARALLEL),
    "data_parallel_hybrid_lb": ((False,), _DATA_PARALLEL),
    "data_parallel_backend": (("mp",), _DATA_PARALLEL),
    "enable_eplb": ((False,), _EXPERT_PARALLEL),
    "eplb_config": ((), _EXPERT_PARALLEL),
    "num_redundant_experts": ((0,), _EXPERT_PARALLEL),
    "max_parallel_loading_workers": ((), ("weights are placed shard by shard by one loader with a bounded number "
                                          "of copies in flight (load_inflight_bytes)")),
    "prefix_caching_hash_algo": (("builtin",), ("prefix-cache blocks are keyed by Python's hash of the block's "
                                               "token ids and its parent's key")),
    "disable_sliding_window": ((False,), "sliding-window layers always attend within their window"),
    "disable_cascade_attn": ((False, True), ""),  # jaxllm has no cascade attention: both values are its behaviour
    "cpu_offload_gb": ((0,), "weights are never offloaded to host memory"),
    "max_num_partial_prefills": ((1,), _PARTIAL_PREFILLS),
    "max_long_partial_prefills": ((1,), _PARTIAL_PREFILLS),
    "long_prefill_token_threshold": ((0,), _PARTIAL_PREFILLS),
    "limit_mm_per_prompt": ((), _MULTIMODAL),
    "interleave_mm_strings": ((False,), _MULTIMODAL),
    "media_io_kwargs": ((), _MULTIMODAL),
    "mm_processor_kwargs": ((), _MULTIMODAL),
    "disable_mm_preprocessor_cache": ((False,), _MULTIMODAL),
    "mm_processor_cache_gb": ((), _MULTIMODAL),
    "mm_encoder_tp_mode": (("weights",), _MULTIMODAL),
    "skip_mm_profiling": ((False,), _MULTIMODAL),
    "enable_multimodal_encoder_data_parallel": ((False,), _MULTIMODAL),
    "enable_lora_bias": ((False,), "LoRA adapters with biases are not supported; " + _LORA),
    "fully_sharded_loras": ((False,), ("adapters' B matrices are sharded like their base projection and the A "
                                       "matrices replicated; the fully sharded layout is not implemented")),
    "lora_extra_vocab_size": ((256,), "adapters with extra vocabulary are not supported; " + _LORA),
    "default_mm_loras": ((), _MULTIMODAL),
    "ray_workers_use_nsight": ((False,), "Ray is not used: one process drives every local device"),
    "num_lookahead_slots": ((0,), "speculative decoding allocates its draft slots itself (speculative_config)"),
    "model_loader_extra_config": ((), "the loader has no extra options (load_format picks it)"),
    "ignore_patterns": ((), "only the checkpoint's *.safetensors (or the .gguf file) are read"),
    "disable_chunked_mm_input": ((False,), _MULTIMODAL),
    "disable_hybrid_kv_cache_manager": ((False,), "there is one KV-cache manager (paged blocks for every layer)"),
    "guided_decoding_backend": (("auto",), "the older name of structured_outputs_config={'backend': ...}: pass that"),
    "reasoning_parser": (("",), "reasoning parsers belong to vLLM's server, not the offline LLM"),
    "logits_processor_pattern": ((), "custom logits processors are not supported yet"),
    "logits_processors": ((), "custom logits processors are not supported yet"),
    "show_hidden_metrics_for_version": ((), _TRACING),
    "otlp_traces_endpoint": ((), _TRACING),
    "collect_detailed_traces": ((), _TRACING),
    "scheduler_cls": ((), _PLUGINS),
    "worker_cls": (("auto",), _PLUGINS),
    "worker_extension_cls": (("",), _PLUGINS),
    "kv_transfer_config": ((), "disaggregated prefill (KV transfer) is not supported"),
    "kv_events_config": ((), "KV-cache events are not published"),
    "override_pooler_config": ((), "vLLM's older name of pooler_config: pass pooler_config"),
    "model_impl": (("auto", "vllm"), "jaxllm runs its own JAX model implementations only"),
    "override_attention_dtype": ((), "attention runs in the model's dtype (kv_cache_dtype picks the cache's)"),
    "calculate_kv_scales": ((False,), ("fp8 KV-cache scales come from the checkpoint (or are 1.0), never "
                                      "measured at run time")),
    "mamba_cache_dtype": (("auto",), "no Mamba models are supported"),
    "mamba_ssm_cache_dtype": (("auto",), "no Mamba models are supported"),
    "additional_config": ((), "there are no platform plug-ins to pass options to"),
    "use_tqdm_on_load": ((False,), "weight loading shows no progress bar"),
    "pt_load_map_location": (("cpu",), "PyTorch checkpoints are not read (safetensors and GGUF only)"),
    "kv_sharing_fast_prefill": ((False,), "no model here shares KV caches across layers"),
    "enable_dbo": ((False,), "dual-batch overlap is not supported"),
    "cudagraph_capture_sizes": ((), _BUCKETS),
    "max_cudagraph_capture_size": ((), _BUCKETS),
    "optimization_level": ((2, 3, "O2", "O3"), ("every step is compiled whole by XLA; enforce_eager=True gives the "
                                               "fastest start-up (each shape compiled when first used)")),
    "model_weights": (("",), "the weights are read from the model folder (or .gguf file) itself"),
    "enable_return_routed_experts": ((False,), _EXPERT_PARALLEL),
    "expert_placement_strategy": (("linear",), _EXPERT_PARALLEL),
    "all2all_backend": ((), _EXPERT_PARALLEL),
    "master_addr": ((), _MULTI_NODE),
    "master_port": ((), _MULTI_NODE),
    "nnodes": ((1,), _MULTI_NODE),
    "node_rank": ((0,), _MULTI_NODE),
    "prefill_context_parallel_size": ((1,), "context parallelism is not supported"),
    "dcp_kv_cache_interleave_size": ((1,), "context parallelism is not supported"),
    "cp_kv_cache_interleave_size": ((1,), "context parallelism is not supported"),
    "data_parallel_external_lb": ((False,), _DATA_PARALLEL),
    "disable_nccl_for_dp_synchronization": ((False,), _DATA_PARALLEL),
    "ubatch_size": ((0,), "dual-batch overlap is not supported"),
    "dbo_decode_token_threshold": ((), "dual-batch overlap is not supported"),
    "dbo_prefill_token_threshold": ((), "dual-batch overlap is not supported"),
    "aggregate_engine_logging": ((False,), ("there is one engine: its statistics are logged as they are "
                                           "(disable_log_stats=False)")),
    "allow_deprecated_quantization": ((False,), "quantization= takes int8, fp8, awq and gptq only"),
    "enable_mm_embeds": ((False,), _MULTIMODAL),
    "mm_processor_cache_type": ((), _MULTIMODAL),
    "mm_shm_cache_max_object_size_mb": ((128,), _MULTIMODAL),
    "mm_encoder_only": ((False,), _MULTIMODAL),
    "mm_encoder_attn_backend": ((), _MULTIMODAL),
    "io_processor_plugin": ((), _PLUGINS),
    "video_pruning_rate": ((0, 0.0), _MULTIMODAL),
    "enable_tower_connector_lora": ((False,), _LORA),
    "specialize_active_lora": ((False,), _LORA),
    "reasoning_parser_plugin": ((), "reasoning parsers belong to vLLM's server, not the offline LLM"),
    "kv_cache_metrics": ((False,), _TRACING),
    "kv_cache_metrics_sample": ((), _TRACING),
    "cudagraph_metrics": ((False,), _TRACING),
    "enable_layerwise_nvtx_tracing": ((False,), _TRACING),
    "enable_mfu_metrics": ((False,), _TRACING),
    "enable_logging_iteration_details": ((False,), _TRACING),
    "enable_mm_processor_stats": ((False,), _MULTIMODAL),
    "profiler_config": ((), "profiles are jax.profiler traces started with LLM.start_profile()"),
    "ec_transfer_config": ((), "disaggregated encoders are not supported"),
    "mamba_block_size": ((), "no Mamba models are supported"),
    "mamba_cache_mode": ((), "no Mamba models are supported"),
    "stream_interval": ((1,), "the offline LLM returns whole outputs (output_kind streams every token)"),
    "enable_fault_tolerance": ((False,), _FAULT_TOLERANCE),
    "engine_recovery_timeout": ((), _FAULT_TOLERANCE),
    "internal_fault_report_port": ((), _FAULT_TOLERANCE),
    "external_fault_notify_port": ((), _FAULT_TOLERANCE),
    "gloo_comm_timeout": ((), _FAULT_TOLERANCE),
    "shutdown_on_fault_tolerance_failure": ((), _FAULT_TOLERANCE),
    "kv_offloading_size": ((), "the KV cache is not offloaded to host memory"),
    "kv_offloading_backend": ((), "the KV cache is not offloaded to host memory"),
    "tokens_only": ((False,), "the offline LLM always detokenizes unless SamplingParams(detokenize=False)"),
    "afd_config": ((), "attention-FFN disaggregation is not supported"),
    "weight_transfer_config": ((), "weights are not transferred between engines"),
}


def is_off(value: Any, off_values: tuple[Any, ...]) -> bool:
    """Whether ``value`` asks for nothing: None, an empty dict/list/tuple, or one of ``off_values`` (a bool
    never equals an int here)."""
    if value is None or (isinstance(value, (dict, list, tuple)) and not value):
        return True
    return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in off_values)


def check_unsupported(kwargs: dict[str, Any]) -> None:
    """A ValueError naming the first keyword of ``kwargs`` that asks for an unsupported vLLM feature."""
    for name, value in kwargs.items():
        off, why = UNSUPPORTED[name]
        if not is_off(value, off):
            accepted = ", ".join(repr(v) for v in off) or "None"
            raise ValueError(f"{name}={value!r} is not supported: {why} (accepted: {accepted})")

"""The roofline of a workload on one GPU (method of ../shared/BENCHMARKS.md).

prefill = (2 x non-embedding params x prompt tokens + causal attention FLOPs) / peak FLOP/s
decode = sum over decode steps of max((weight bytes + KV bytes read) / HBM bandwidth, step FLOPs / peak FLOP/s),
with every request that fits (up to max_num_seqs) running at once; a finished request's slot is taken by the
next waiting one. Roofline throughput = output tokens / (prefill + decode).
Sliding-window layers (Mistral, Gemma 2/3, Phi-3) attend to and read at most ``window`` keys per token: their
attention FLOPs and KV bytes are counted per layer with each sequence's context capped at the window.
Soft-capping (Gemma 2) adds one tanh per score: elementwise work, not counted as matmul FLOPs.
Quantized runs: linear weights count at their bytes per element, an fp8 KV cache at 1 byte, and under fp8 W8A8 the
linear layers' FLOPs at the fp8 GEMM rate (``FP8_PEAK_FLOPS``).
Mixture-of-experts models: FLOPs from the ACTIVE parameters (k of E experts per token, prefill included); a decode
step of n sequences reads the non-expert weights plus the experts its tokens are expected to pick under uniform
routing (``experts_touched``: k at n = 1, nearly all E at large n).
"""

from __future__ import annotations

import heapq

from jaxllm.config import ModelConfig
from jaxllm.hardware import CARD_PEAKS, REFERENCE_CARD
from jaxllm.model_size import linear_param_counts, linear_weight_bytes, weight_bytes
from jaxllm.quantization_config import INT4_GROUP_SIZE

PEAK_FLOPS = CARD_PEAKS[REFERENCE_CARD].matmul_flops  # bf16 matmul measured through JAX on the H200
# fp8 x fp8 GEMM (cuBLASLt, f32 accumulation): the bf16 peak times the fp8/bf16 speed-up measured through JAX on
# the same GEMM in the same run (Llama-8B gate_up, M=2048: 789 vs 466 us, 1.69x; docs/quantization.md), so both
# rates are on the same footing.
FP8_PEAK_FLOPS = PEAK_FLOPS * 789.3 / 466.4
HBM_BYTES_PER_S = CARD_PEAKS[REFERENCE_CARD].copy_bytes_per_s  # device-to-device copy, bytes read + written


def dummy_int4_quantization_config(method: str, group_size: int = INT4_GROUP_SIZE) -> dict:
    """A config.json quantization_config for random 4-bit weights in ``method``'s format (load_format="dummy")."""
    if method == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}
    if method == "gptq":
        return {"quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": False, "sym": True,
                "checkpoint_format": "gptq"}
    raise ValueError(f"{method!r} is not a 4-bit method; choose 'awq' or 'gptq'")


def experts_touched(cfg: ModelConfig, tokens: int) -> float:
    """Expected distinct experts per MoE layer that ``tokens`` tokens pick under uniform routing,
    E * (1 - (1 - k/E)^tokens): k for one token, approaching E for large batches."""
    e, k = cfg.num_experts, cfg.num_experts_per_tok
    return e * (1 - (1 - k / e) ** tokens)


def causal_pairs(n: int, window: int | None) -> float:
    """(query, key) pairs of a causal n-token prefill, n^2 / 2, with a window: at most ``window`` keys a query."""
    if window is None or window >= n:
        return n * n / 2
    return window * n - window * window / 2


def run_roofline(cfg: ModelConfig, prompt_lens: list[int], output_lens: list[int], *, max_num_seqs: int,
                 quantization: str | None, kv_cache_dtype: str, tensor_parallel_size: int,
                 fp8_activations: str | None, peak_flops: float = PEAK_FLOPS,
                 bandwidth: float = HBM_BYTES_PER_S) -> dict:
    """The roofline of a ``jaxllm bench`` run from its flags: quantized linear weights at their bytes, an fp8 KV
    cache at 1 byte, W8A8 (fp8 with ``fp8_activations="dynamic"``) linear FLOPs at the fp8 rate (``peak_flops``
    times the fp8/bf16 GEMM speed-up of ``FP8_PEAK_FLOPS``), N GPUs. ``peak_flops`` / ``bandwidth``: the card's
    (default: the H200's, the reference of every target)."""
    fp8 = quantization == "fp8" and fp8_activations == "dynamic"
    return roofline(cfg, prompt_lens, output_lens, max_num_seqs, peak_flops=peak_flops, bandwidth=bandwidth,
                    linear_weight_bytes=linear_weight_bytes(quantization),
                    kv_dtype_bytes=1 if kv_cache_dtype.startswith("fp8") else None,
                    num_gpus=tensor_parallel_size,
                    linear_peak_flops=peak_flops * FP8_PEAK_FLOPS / PEAK_FLOPS if fp8 else None)


def roofline(cfg: ModelConfig, prompt_lens: list[int], output_lens: list[int], max_num_seqs: int,
             dtype_bytes: int = 2, peak_flops: float = PEAK_FLOPS, bandwidth: float = HBM_BYTES_PER_S,
             linear_weight_bytes: float | None = None, kv_dtype_bytes: int | None = None,
             num_gpus: int = 1, linear_peak_flops: float | None = None) -> dict:
    """``num_gpus``: tensor parallelism over that many GPUs, counted as ideal (their FLOP/s and bandwidth add
    up, communication is free), so the % reached also shows what TP loses. ``linear_weight_bytes``: bytes per element of the decoder layers' linear weights (see
    ``linear_weight_bytes()``; default ``dtype_bytes``). Norms, embeddings and the lm_head stay ``dtype_bytes``.
    ``kv_dtype_bytes``: bytes per cached K/V element (1 for an fp8 KV cache; default ``dtype_bytes``).
    ``linear_peak_flops``: the rate of the decoder layers' linear FLOPs when they run in another precision (fp8
    W8A8: ``FP8_PEAK_FLOPS``); the rest (attention, lm_head) stays at ``peak_flops``. Default: ``peak_flops``."""
    linear_peak = (peak_flops if linear_peak_flops is None else linear_peak_flops) * num_gpus
    peak_flops, bandwidth = peak_flops * num_gpus, bandwidth * num_gpus
    layers, heads, dh = cfg.num_layers, cfg.num_heads, cfg.head_dim
    head_params = cfg.vocab_size * cfg.hidden_size
    linear_params, expert_params = linear_param_counts(cfg)
    lw_bytes = dtype_bytes if linear_weight_bytes is None else linear_weight_bytes
    all_weight_bytes = weight_bytes(cfg, dtype_bytes, lw_bytes)
    # MoE: a step reads only the experts its tokens picked (experts_touched) and computes only the active ones
    active_body = cfg.num_params(include_embeddings=False, experts_per_layer=cfg.num_experts_per_tok)
    active_linear = linear_params - expert_params * (1 - cfg.num_experts_per_tok / max(cfg.num_experts, 1))
    kv_elem_bytes = dtype_bytes if kv_dtype_bytes is None else kv_dtype_bytes
    kv_bytes_per_token = cfg.num_kv_heads * dh * 2 * kv_elem_bytes  # one layer's
    windows = list(cfg.sliding_windows) or [None] * layers

    def attended(ctxs: list[int]) -> int:
        """Keys read by one decode step of sequences with contexts ``ctxs``, summed over the layers."""
        return sum(sum(ctxs) if w is None else sum(min(c, w) for c in ctxs) for w in windows)

    def flop_seconds(tokens: int, attention_flops: float, head: bool) -> float:
        """Time of ``tokens`` rows through the linear layers (at their rate; MoE: the active experts), the rest
        of the body, the attention FLOPs and (decode) the lm_head."""
        other = 2 * (active_body - active_linear + (head_params if head else 0)) * tokens + attention_flops
        return 2 * active_linear * tokens / linear_peak + other / peak_flops

    def step_weight_bytes(tokens: int) -> float:
        """Weights one decode step of ``tokens`` sequences reads: all but the experts no token picked."""
        unread = expert_params * (1 - experts_touched(cfg, tokens) / cfg.num_experts) if expert_params else 0
        return all_weight_bytes - unread * lw_bytes

    prefill_s = sum(flop_seconds(n, 4 * heads * dh * sum(causal_pairs(n, w) for w in windows), head=False)
                    for n in prompt_lens)

    # decode: simulate the running set step by step (a heap of finish steps keeps it O(N log N) per step)
    decode_s, step = 0.0, 0
    waiting = list(zip(prompt_lens, output_lens))[::-1]
    running: list[tuple[int, int, int]] = []  # (finish step, start step, prompt len)
    windowed = any(w is not None for w in windows)
    ctx_sum = 0  # sum of context lengths of the running set at the current step
    while waiting or running:
        if waiting and len(running) < max_num_seqs:
            p, o = waiting.pop()
            # the first output token comes from the prefill; o - 1 decode steps follow
            heapq.heappush(running, (step + o - 1, step, p))
            ctx_sum += p
            continue
        if running[0][0] <= step:  # finished: free its slot, then refill
            _, start, p = heapq.heappop(running)
            ctx_sum -= p + (step - start)
            continue
        n = len(running)
        keys = attended([p + step - start for _, start, p in running]) if windowed else layers * ctx_sum
        bytes_ = step_weight_bytes(n) + keys * kv_bytes_per_token
        decode_s += max(bytes_ / bandwidth, flop_seconds(n, 4 * heads * dh * keys, head=True))
        ctx_sum += n
        step += 1
    out_tokens, prompt_tokens = sum(output_lens), sum(prompt_lens)
    total_s = prefill_s + decode_s
    return {"prefill_s": prefill_s, "decode_s": decode_s, "output_tok_s": out_tokens / total_s,
            "total_tok_s": (out_tokens + prompt_tokens) / total_s, "weight_bytes": all_weight_bytes,
            "peak_flops": peak_flops, "linear_peak_flops": linear_peak, "hbm_bytes_per_s": bandwidth,
            "num_gpus": num_gpus}

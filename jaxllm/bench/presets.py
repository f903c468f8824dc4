"""Named benchmark configurations: ``jaxllm bench --preset NAME`` (and ``scripts/device.sh NAME``).

Each preset is the ``jaxllm bench`` arguments of one row of benchmarks/README.md, so a committed figure and
the command that reproduces it share one name. ``baseline`` names the bf16 preset a quantized or variant row
is compared with; a ratio is only meaningful when both ran on the same machine (one ``scripts/device.sh``
call).
"""

from __future__ import annotations

import dataclasses
import os

from jaxllm.bench.workloads import CONFIG_DIR


def _b2(requests: int, prompt: tuple[int, int], output: tuple[int, int]) -> tuple[str, ...]:
    """B2's architecture with other request counts and lengths."""
    return ("--workload", "B2", "--num-requests", str(requests), "--prompt-len", *map(str, prompt),
            "--output-len", *map(str, output))


DECODE64 = _b2(64, (64, 128), (1024, 1024))
DECODE256 = _b2(256, (64, 128), (1024, 1024))
NGRAM = ("--speculative-config",
         '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}')
# every running decode in every step
NGRAM_ALL = ("--speculative-config", NGRAM[1].replace("}", ', "disable_by_batch_size": 256}'))

# Llama-3.2-1B dims (the 8B's vocabulary) as a random draft, k=4; speculation off in steps with more than 32
# running sequences (disable_by_batch_size: a large batch is compute-bound and verification does not pay)
DRAFT = ("--draft-config", os.path.join(CONFIG_DIR, "llama-3.2-1b.json"), "--speculative-config",
         '{"method": "draft_model", "num_speculative_tokens": 4, "disable_by_batch_size": 32}')


# the same draft under the automatic rule (no disable_by_batch_size: docs/spec_decode.md)
DRAFT_AUTO = ("--draft-config", os.path.join(CONFIG_DIR, "llama-3.2-1b.json"), "--speculative-config",
              '{"method": "draft_model", "num_speculative_tokens": 4}')

# the target (and draft) repeat their last input token: drafts accepted nearly always (jaxllm/bench/echo_weights.py)
ECHO = ("--echo-weights",)


def _spec(requests: int) -> tuple[str, ...]:
    """8B dims, ``requests`` prompts of 256 tokens repeating a 32-token segment (random weights accept drafts
    only where the text repeats), 256 greedy output tokens, all requests at once."""
    return (*_b2(requests, (256, 256), (256, 256)), "--prompt-period", "32", "--max-num-seqs", str(max(requests, 1)))


def _b2_mix(config: str) -> tuple[str, ...]:
    """B2's request mix (1000 requests, in 100..1024, out 256) on another architecture's dims."""
    return ("--config", os.path.join(CONFIG_DIR, config), "--num-requests", "1000", "--prompt-len", "100", "1024",
            "--output-len", "256", "256")


PREEMPT = (*_b2(128, (512, 1024), (256, 512)), "--num-gpu-blocks-override", "1024")
PREFIX3X = (*_b2(120, (64, 128), (32, 32)), "--num-gpu-blocks-override", "1024", "--shared-prefix", "4096", "12")
L70 = ("--config", os.path.join(CONFIG_DIR, "llama-3.1-70b.json"), "--num-requests", "256",
       "--prompt-len", "100", "1024", "--output-len", "256", "256", "--tensor-parallel-size", "4")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One benchmark row: ``args`` for ``jaxllm bench``, what it measures, the GPUs it needs (the device
    recipe skips it on a machine with fewer) and its time limit."""

    args: tuple[str, ...]
    what: str
    baseline: str | None = None  # the preset this one is compared with on the same machine
    gpus: int = 1
    limit_s: int = 240  # cold start-up included; the device recipe skips a run that cannot finish in time


PRESETS = {
    "b1": Preset(("--workload", "B1"), "B1: Qwen3-0.6B dims, 256 requests, in/out 100..1024, T=0.6"),
    "b1-topp": Preset(("--workload", "B1", "--top-p", "0.95"), "B1 with top_p=0.95", baseline="b1"),
    "b1-topk": Preset(("--workload", "B1", "--top-k", "50"), "B1 with top_k=50", baseline="b1"),
    "b1-minp": Preset(("--workload", "B1", "--min-p", "0.05"), "B1 with min_p=0.05", baseline="b1"),
    "b1-topk-topp": Preset(("--workload", "B1", "--top-k", "50", "--top-p", "0.95"), "B1 with top_k=50 and top_p=0.95",
                           baseline="b1"),
    "b1-topp-minp": Preset(("--workload", "B1", "--top-p", "0.95", "--min-p", "0.05"),
                           "B1 with top_p=0.95 and min_p=0.05", baseline="b1"),
    "sharegpt": Preset(("--workload", "ShareGPT"),
                       "ShareGPT-like: Qwen3-0.6B dims, 2000 requests, lognormal in/out (means 161 / 338), T=0.8, "
                       "top_p=0.95, a seed per request", baseline="sharegpt-plain", limit_s=300),
    "sharegpt-plain": Preset(("--workload", "ShareGPT", "--top-p", "1.0"),
                             "the ShareGPT requests with plain temperature sampling (no top_p)", limit_s=300),
    "b1-structured": Preset(("--workload", "B1", "--structured"),
                            "B1, then again with a JSON schema per request (8 schemas): constrained vs plain",
                            baseline="b1", limit_s=360),
    "b1-peer": Preset(("--workload", "B1-peer", "--peer", "hf"),
                      "B1-peer: B1's prompts, 512 out, greedy; HF transformers on the same requests"),
    "b2": Preset(("--workload", "B2"), "B2: Llama-3.1-8B dims, 1000 requests, in 100..1024, out 256"),
    "b2-peer": Preset(("--workload", "B2", "--peer", "hf", "--peer-max-requests", "256"),
                      "B2; HF transformers on its first 256 requests", limit_s=420),
    "b2-fp8kv": Preset(("--workload", "B2", "--kv-cache-dtype", "fp8"), "B2, fp8 KV cache", baseline="b2"),
    "b2-w8a8": Preset(("--workload", "B2", "--quantization", "fp8"), "B2, fp8 W8A8", baseline="b2"),
    "b2-w8a8-fp8kv": Preset(("--workload", "B2", "--quantization", "fp8", "--kv-cache-dtype", "fp8"),
                            "B2, fp8 W8A8 + fp8 KV cache", baseline="b2"),
    "b2-lora": Preset(("--workload", "B2", "--lora-adapters", "8", "--lora-rank", "16"),
                      "B2, 8 rank-16 LoRA adapters (all target modules) spread over the requests", baseline="b2"),
    "b2-int8": Preset(("--workload", "B2", "--quantization", "int8"), "B2, int8 weight-only", baseline="b2"),
    "b2-awq": Preset(("--workload", "B2", "--quantization", "awq"), "B2, AWQ int4", baseline="b2",
                     limit_s=300),
    "decode64": Preset(DECODE64, "decode-heavy B2: 64 requests, in 64..128, out 1024"),
    "decode64-awq": Preset((*DECODE64, "--quantization", "awq"), "decode-heavy, 64 requests, AWQ int4",
                           baseline="decode64", limit_s=300),
    "decode64-gptq": Preset((*DECODE64, "--quantization", "gptq"), "decode-heavy, 64 requests, GPTQ int4",
                            baseline="decode64", limit_s=300),
    "decode256": Preset(DECODE256, "decode-heavy B2: 256 requests, in 64..128, out 1024"),
    "decode256-awq": Preset((*DECODE256, "--quantization", "awq"), "decode-heavy, 256 requests, AWQ int4",
                            baseline="decode256", limit_s=300),
    "long-mix": Preset(_b2(64, (2048, 8192), (128, 256)),
                       "long prompts: 64 requests, in 2048..8192, out 128..256"),
    "long-8k": Preset(_b2(16, (8192, 8192), (8, 8)), "long prompts: 16 requests of 8192 tokens, out 8"),
    "b1-dp2": Preset(("--workload", "B1", "--data-parallel-size", "2"),
                     "B1, data_parallel_size=2 (two replicas, one GPU each)", baseline="b1", gpus=2),
    "b1-dp4": Preset(("--workload", "B1", "--data-parallel-size", "4"),
                     "B1, data_parallel_size=4 (four replicas, one GPU each)", baseline="b1", gpus=4),
    "b2-tp2": Preset(("--workload", "B2", "--tensor-parallel-size", "2"), "B2, tensor_parallel_size=2",
                     baseline="b2", gpus=2),
    "b2-tp4": Preset(("--workload", "B2", "--tensor-parallel-size", "4"), "B2, tensor_parallel_size=4",
                     baseline="b2", gpus=4),
    "spec-b1": Preset(_spec(1), "8B dims, batch 1, repeating 256-token prompts, out 256, no speculation"),
    "spec-b1-ngram": Preset((*_spec(1), *NGRAM), "spec-b1 with n-gram speculation (k=4)", baseline="spec-b1"),
    "spec-b16": Preset(_spec(16), "8B dims, batch 16, repeating prompts, no speculation"),
    "spec-b16-ngram": Preset((*_spec(16), *NGRAM), "spec-b16 with n-gram speculation (k=4)",
                             baseline="spec-b16"),
    "spec-b256": Preset(_spec(256), "8B dims, batch 256, repeating prompts, no speculation"),
    "spec-b256-ngram": Preset((*_spec(256), *NGRAM), "spec-b256 with n-gram speculation (k=4)",
                              baseline="spec-b256"),
    "spec-b1-draft": Preset((*_spec(1), *DRAFT), "spec-b1 with a random Llama-3.2-1B-dims draft model (k=4)",
                            baseline="spec-b1"),
    "spec-b16-draft": Preset((*_spec(16), *DRAFT), "spec-b16 with a random Llama-3.2-1B-dims draft model (k=4)",
                             baseline="spec-b16"),
    "spec-b256-draft": Preset((*_spec(256), *DRAFT), "spec-b256 with the draft model; disable_by_batch_size=32 "
                              "turns speculation off at this batch", baseline="spec-b256"),
    "spec-b1-draft-auto": Preset((*_spec(1), *DRAFT_AUTO), "spec-b1-draft under the automatic speculation rule",
                                 baseline="spec-b1"),
    "spec-b256-draft-auto": Preset((*_spec(256), *DRAFT_AUTO), "spec-b256 with the draft model under the automatic "
                                   "speculation rule (no disable_by_batch_size)", baseline="spec-b256"),
    "spec-b1-t08": Preset((*_spec(1), "--temperature", "0.8"), "spec-b1 sampled at temperature 0.8, no speculation"),
    "spec-b1-draft-t08": Preset((*_spec(1), "--temperature", "0.8", *DRAFT),
                                "spec-b1-t08 with the draft model: drafts sampled from its q, verified by rejection "
                                "sampling", baseline="spec-b1-t08"),
    "spec-b16-t08": Preset((*_spec(16), "--temperature", "0.8"),
                           "spec-b16 sampled at temperature 0.8, no speculation"),
    "spec-b16-draft-t08": Preset((*_spec(16), "--temperature", "0.8", *DRAFT),
                                 "spec-b16-t08 with the draft model (sampled drafts)", baseline="spec-b16-t08"),
    # echo weights (jaxllm/bench/echo_weights.py): the random 8B-dims target (and draft) repeat the last token,
    # so nearly every draft is accepted: speculation's upper bound at these shapes, against the same model
    # without speculation (the automatic rule decides when to speculate)
    "spec-b1-echo": Preset((*_spec(1), *ECHO), "spec-b1 with echo weights (acceptance near 1), no speculation"),
    "spec-b1-echo-ngram": Preset((*_spec(1), *ECHO, *NGRAM), "spec-b1-echo with n-gram speculation (k=4)",
                                 baseline="spec-b1-echo"),
    "spec-b1-echo-draft": Preset((*_spec(1), *ECHO, *DRAFT_AUTO), "spec-b1-echo with an echoing "
                                 "Llama-3.2-1B-dims draft model (k=4)", baseline="spec-b1-echo"),
    "spec-b16-echo": Preset((*_spec(16), *ECHO), "spec-b16 with echo weights, no speculation"),
    "spec-b16-echo-ngram": Preset((*_spec(16), *ECHO, *NGRAM), "spec-b16-echo with n-gram speculation (k=4)",
                                  baseline="spec-b16-echo"),
    "spec-b16-echo-draft": Preset((*_spec(16), *ECHO, *DRAFT_AUTO), "spec-b16-echo with an echoing "
                                  "Llama-3.2-1B-dims draft model (k=4)", baseline="spec-b16-echo"),
    "spec-b256-echo": Preset((*_spec(256), *ECHO), "spec-b256 with echo weights, no speculation"),
    "spec-b256-echo-ngram": Preset((*_spec(256), *ECHO, *NGRAM), "spec-b256-echo with n-gram speculation (k=4), "
                                   "the automatic rule", baseline="spec-b256-echo"),
    "spec-b256-echo-ngram-all": Preset((*_spec(256), *ECHO, *NGRAM_ALL), "spec-b256-echo with n-gram "
                                       "speculation for every sequence in every step (disable_by_batch_size=256): "
                                       "what the automatic rule declines", baseline="spec-b256-echo"),
    "b2-gemma2-9b": Preset(_b2_mix("gemma-2-9b.json"),
                           "B2 mix on Gemma-2-9B dims (soft-capping, 4096-token windows on half the layers)",
                           limit_s=300),
    "b2-gemma3-12b": Preset(_b2_mix("gemma-3-12b.json"),
                            "B2 mix on Gemma-3-12B dims (1024-token windows on 5 of 6 layers)", limit_s=300),
    "b2-phi3-mini": Preset(_b2_mix("phi-3-mini.json"), "B2 mix on Phi-3-mini dims (head_dim 96, window 2047)"),
    "b2-qwen3-30b-a3b": Preset(("--workload", "B2-qwen3-30b-a3b"),
                               "B2 mix on Qwen3-30B-A3B dims (128 experts, top-8, grouped GEMM)", limit_s=360),
    "b2-mixtral-8x7b": Preset(("--workload", "B2-mixtral-8x7b"),
                              "B2 mix on Mixtral-8x7B dims (8 experts, top-2; ~94 GB of bf16 weights: H200)",
                              limit_s=420),
    "b2-mixtral-8x7b-fp8": Preset(("--workload", "B2-mixtral-8x7b", "--quantization", "fp8"),
                                  "B2 mix on Mixtral-8x7B dims, fp8 experts and linears (~47 GB: one 80 GB card)",
                                  limit_s=420),
    # the host tier (docs/kv_offload.md): a 1024-block (16K-token) device cache under 128 long requests
    "preempt-recompute": Preset((*PREEMPT, "--preemption-mode", "recompute"),
                                "preemption-heavy B2 (128 requests, in 512..1024, out 256..512, 1024 device "
                                "blocks): preemption by recompute", limit_s=300),
    "preempt-swap": Preset((*PREEMPT, "--swap-space", "16", "--preemption-mode", "swap"),
                           "the same, preemption by swap to 16 GiB of host memory", baseline="preempt-recompute",
                           limit_s=300),
    # 12 shared prefixes of 4096 tokens (~49K tokens) over a 1024-block (16K-token) device cache: ~3x
    "prefix3x": Preset(PREFIX3X, "12 shared 4096-token prefixes, 3x the device cache, no host tier",
                       limit_s=300),
    "prefix3x-host": Preset((*PREFIX3X, "--swap-space", "8", "--host-prefix-cache"),
                            "the same with the host prefix cache (8 GiB)", baseline="prefix3x", limit_s=300),
    "l70-tp4": Preset(L70, "Llama-3.1-70B dims, TP=4, 256 requests, in 100..1024, out 256", gpus=4,
                      limit_s=360),
}


def preset_args(name: str) -> list[str]:
    """The bench arguments of preset ``name`` (ValueError listing the presets when unknown)."""
    if name not in PRESETS:
        raise ValueError(f"unknown benchmark preset {name!r}; choose one of {', '.join(PRESETS)}")
    return list(PRESETS[name].args)

"""What a step costs, for the automatic speculation rule (plain Python + numpy, no jax: the engine uses it).

A step of t query tokens over sequences whose contexts hold ``keys`` tokens in all reads
bytes = weight bytes + keys x KV bytes per token + t x logits bytes and computes
flops = 2 x params x t + attention FLOPs, and costs
    overhead + (memory^3 + compute^3)^(1/3),  memory = bytes / HBM bandwidth, compute = flops / peak FLOP/s
with the device's peaks (``platform_peaks``: a GPU's are its card's measured peaks, jaxllm/hardware.py). The
cube norm is the roofline's max(memory, compute) smoothed: within a few percent of it far from the ridge, 26%
above it at the ridge, where memory traffic and compute do not overlap perfectly and a pure roofline would call
the extra FLOPs free. Decode reads every weight once per step whatever t is, so while a step is memory-bound
(t below about peak FLOP/s / bandwidth x bytes per weight / 2: ~180 tokens for a bf16 model on an H200) k more
query tokens per sequence cost almost nothing; past that point they cost their full FLOPs and verification
loses. A draft model adds its k one-token forward passes over the speculating sequences, and a speculating step
gives up the overlap of host and device work (``DevicePeaks.sync_seconds``), so the rule weighs those too
(``jaxllm.spec_decode.auto``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxllm.hardware import card_peaks
from jaxllm.model_size import config_linear_weight_bytes, weight_bytes


@dataclasses.dataclass(frozen=True)
class DevicePeaks:
    flops: float  # matmul FLOP/s
    bandwidth: float  # HBM (memory) bytes/s
    forward_overhead: float  # seconds one step costs beyond its roofline (launches, small kernels, host floor)
    sync_seconds: float  # what a step loses when the host waits for it (no overlap with the next step's host work)


def platform_peaks(platform: str, device_kind: str = "") -> DevicePeaks:
    """Rough rates of the device. GPU: the card's measured peaks (``jaxllm.hardware``; a card not measured gets
    the H200's); a step's launches and the host work a synchronous step exposes are estimates. CPU (two cores):
    a jitted f32 matmul (~200 GFLOP/s) and matrix-vector product (~30 GB/s) through JAX; a tiny model's whole
    step takes ~0.2 ms, of which ~0.04 ms is the forward that asynchronous scheduling overlaps."""
    if platform == "cpu":
        return DevicePeaks(200e9, 30e9, 200e-6, 40e-6)
    card = card_peaks(device_kind)
    return DevicePeaks(card.matmul_flops, card.copy_bytes_per_s, 50e-6, 200e-6)


ROOFLINE_NORM = 3  # the smoothing of max(memory, compute): see the module docstring
# host work per speculating sequence: its k + 1 sampling rows, their verification arrays and the accepted tokens'
# updates (measured on the CPU: a step of 4 speculating sequences with k = 3 and short contexts takes ~0.22 ms
# more than a plain one), and with n-gram drafts the lookup's conversion of the context to numpy, which grows
# with it (a lookup takes 12 us at 50 tokens, 24 us at 500, 220 us at 2000)
HOST_SEQ_SECONDS = 40e-6
LOOKUP_SECONDS_PER_TOKEN = 0.05e-6


@dataclasses.dataclass(frozen=True)
class StepCost:
    """One model's roofline step time. ``weight_bytes``: bytes a step reads; ``flops_per_token``: 2 x the params
    a token goes through (the lm_head included); ``kv_bytes_per_token``: K and V of one context token over all
    layers; ``attention_flops_per_pair``: FLOPs of one (query, key) pair over all layers; ``logits_bytes``: one
    logits row written and read by the sampler."""

    weight_bytes: float
    flops_per_token: float
    kv_bytes_per_token: float
    attention_flops_per_pair: float
    logits_bytes: float
    peaks: DevicePeaks

    def seconds(self, tokens, keys, pairs):
        """Step time of ``tokens`` query tokens reading ``keys`` context tokens' K/V, with ``pairs`` (query, key)
        pairs; numpy arrays broadcast (one entry per candidate step)."""
        p = self.peaks
        read = self.weight_bytes + keys * self.kv_bytes_per_token + tokens * self.logits_bytes
        flops = tokens * self.flops_per_token + pairs * self.attention_flops_per_pair
        memory, compute = read / p.bandwidth, flops / p.flops
        return p.forward_overhead + (memory ** ROOFLINE_NORM + compute ** ROOFLINE_NORM) ** (1 / ROOFLINE_NORM)


def step_cost(cfg, peaks: DevicePeaks, kv_dtype_bytes: int, num_devices: int = 1) -> StepCost:
    """The StepCost of ModelConfig ``cfg`` (its dtype; quantized linear weights at their bytes; MoE: every
    expert read, the active ones computed) over ``num_devices`` tensor-parallel devices (their rates add up)."""
    dtype_bytes = 4 if cfg.dtype == "float32" else 2
    head = cfg.vocab_size * cfg.hidden_size
    active = cfg.num_params(include_embeddings=False, experts_per_layer=cfg.num_experts_per_tok)
    scaled = dataclasses.replace(peaks, flops=peaks.flops * num_devices, bandwidth=peaks.bandwidth * num_devices)
    return StepCost(
        weight_bytes=weight_bytes(cfg, dtype_bytes, config_linear_weight_bytes(cfg, dtype_bytes)),
        flops_per_token=2 * (active + head),
        kv_bytes_per_token=cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * kv_dtype_bytes,
        attention_flops_per_pair=4 * cfg.num_layers * cfg.num_heads * cfg.head_dim,
        logits_bytes=2 * 4 * cfg.vocab_size,
        peaks=scaled)


@dataclasses.dataclass(frozen=True)
class SpecCostModel:
    """The cost of a step with m speculating sequences against the same step without speculation. ``draft``:
    the draft model's StepCost (method "draft_model"), else None (n-gram: drafts found on the host)."""

    target: StepCost
    num_speculative_tokens: int
    draft: StepCost | None = None

    def seconds(self, tokens, keys, pairs, num_spec, spec_keys):
        """Step time with ``num_spec`` speculating sequences (0: a plain step) whose contexts hold ``spec_keys``
        tokens; ``tokens`` / ``keys`` / ``pairs`` count the whole step (drafts included). numpy arrays
        broadcast."""
        num_spec = np.asarray(num_spec, np.float64)
        t = self.target.seconds(tokens, keys, pairs)
        extra = num_spec * HOST_SEQ_SECONDS
        if self.draft is None:
            extra = extra + spec_keys * LOOKUP_SECONDS_PER_TOKEN
        else:  # k one-token draft steps over the speculating sequences (nothing when none speculates)
            extra = extra + self.num_speculative_tokens * self.draft.seconds(num_spec, spec_keys, spec_keys)
        return t + np.where(num_spec > 0, self.target.peaks.sync_seconds + extra, 0.0)

    def max_speculating_seqs(self, max_num_seqs: int, acceptance: float) -> int:
        """The most sequences a step may speculate for: the largest m <= ``max_num_seqs`` for which m decodes
        that all speculate at ``acceptance`` (short contexts) are expected to emit more tokens per second than
        m plain decodes. The runner compiles its logits rows and the draft's q arrays for it."""
        k = self.num_speculative_tokens
        expected = expected_tokens(acceptance, k)
        m = np.arange(1, max_num_seqs + 1, dtype=np.float64)
        zero = np.zeros_like(m)
        plain = self.seconds(m, zero, zero, zero, zero)
        spec = self.seconds(m * (k + 1), zero, zero, m, zero)
        pays = np.flatnonzero(expected * plain >= spec)
        return int(pays[-1]) + 1 if pays.size else 0


def expected_tokens(acceptance, k):
    """Tokens a verifying step emits when each of ``k`` drafts is accepted with probability ``acceptance`` (until
    the first rejection), the target's own token included: (1 - a^(k+1)) / (1 - a)."""
    a = np.minimum(np.asarray(acceptance, np.float64), 1 - 1e-9)
    return (1 - a ** (np.asarray(k, np.float64) + 1)) / (1 - a)

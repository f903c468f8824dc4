"""The acceptance rule of speculative decoding, on device, inside the sampler program (jax).

Standard speculative sampling (Leviathan et al. 2023; Chen et al. 2023) accepts a draft token x at a position
with probability min(1, p(x) / q(x)), p the target distribution, q the draft's; on rejection it samples from
norm(max(0, p - q)) and stops; when all k drafts are accepted it samples a bonus token from the last p.
n-gram drafts are deterministic: q is one-hot on x, so the rule is "accept with probability p(x), else sample
from p with x removed, renormalized". Sampling y ~ p and accepting iff y == x is exactly that rule: P(accept)
= p(x), and y conditioned on y != x has distribution norm(max(0, p - onehot(x))). So the runner samples every
speculative row with the plain sampler (``p`` fully processed: temperature, top-k/top-p/min-p, penalties,
logit_bias, allowed/banned ids; greedy rows take the argmax) and ``accepted_rows`` keeps the prefix of rows
up to the first mismatch. Each row's random stream is keyed by (seed, output index) as without speculation,
so a seeded request samples the same tokens with or without it.

``rejection_sample_reference`` is the textbook rule written out for one sequence (uniforms, residual
distribution), the reference the tests compare the sampler path against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def accepted_rows(sampled: jax.Array, draft: jax.Array, row_start: jax.Array) -> jax.Array:
    """Which rows' sampled tokens are emitted. Rows are ragged per sequence: a speculative sequence with k
    drafts owns k + 1 consecutive rows starting at ``row_start``; row j is compared with draft j + 1.

    sampled [R] i32: the target's sample of each row; draft [R] i32: the draft token the row's sample must
    equal for the next row to count (-1: none, i.e. a sequence's last row or a plain row); row_start [R] i32:
    the first row of the row's sequence. -> valid [R] bool: no mismatch in rows [row_start, row)."""
    mismatch = ((draft >= 0) & (sampled != draft)).astype(jnp.int32)
    before = jnp.cumsum(mismatch) - mismatch  # mismatches in rows [0, row)
    return before == before[row_start]


def rejection_sample_reference(key: jax.Array, probs: jax.Array, draft: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The textbook rule for one sequence with a deterministic (one-hot) draft: probs [K + 1, V] target
    distributions (rows sum to 1), draft [K] i32 -> (tokens [K + 1] i32, -1 after the last emitted token,
    num_emitted i32 in 1..K + 1)."""
    num_k = draft.shape[0]
    keys = jax.random.split(key, 2 * num_k + 1)
    tokens = jnp.full((num_k + 1,), -1, jnp.int32)
    done = jnp.bool_(False)
    for j in range(num_k):
        p = probs[j]
        accept = jax.random.uniform(keys[2 * j]) < p[draft[j]]  # min(1, p(x) / q(x)) with q(x) = 1
        residual = jnp.maximum(p - jax.nn.one_hot(draft[j], p.shape[0]), 0.0)  # norm(max(0, p - q))
        residual = residual / jnp.maximum(residual.sum(), 1e-30)
        recovered = jax.random.categorical(keys[2 * j + 1], jnp.log(residual)).astype(jnp.int32)
        tokens = tokens.at[j].set(jnp.where(done, -1, jnp.where(accept, draft[j], recovered)))
        done = done | ~accept
    bonus = jax.random.categorical(keys[-1], jnp.log(probs[num_k])).astype(jnp.int32)
    tokens = tokens.at[num_k].set(jnp.where(done, -1, bonus))
    return tokens, jnp.sum(tokens >= 0).astype(jnp.int32)

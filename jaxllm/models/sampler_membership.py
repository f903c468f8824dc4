"""Step 3 of ``sampler_filters``: which of the race's draws survive top-k / top-p, exactly, in one read of the
logits with as few running sums per element as the answer needs.

Survival is monotone in the logit: a draw survives iff x >= t for the row's threshold t (min_p, top-k, top-p all
keep a value-prefix of the row). The token is the first surviving draw in race order, so a draw whose logit is
at or below an earlier draw's is never the token (when the earlier one fails, it fails too): only the *records*,
the draws whose logit beats every earlier draw's, are tested (``records``: the first MEMBERSHIP_TESTS of them;
with RACE_CANDIDATES = 8 draws, 5 records leave a flat top_p = 0.5 row undecided about as often as testing all 8).

Each row needs one sum per tested draw: a top-p row (top_p < 1) the mass strictly above it, any other row the
number of tokens strictly above it (top-k; in f32, exact below 2^24 tokens). A row with both top_p < 1 and a
top-k its floor does not hold is undecided before this pass (the mass of its top-k survivors is unknown), so one
weight per row (exp or 1) serves both: R + 1 sums per element (R tested draws and the total mass) where a count
and a mass per draw would take 2R + 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

MEMBERSHIP_TESTS = 5  # records of the race tested for membership
NEG_INF = float("-inf")


def records(ids: jax.Array, cand_x: jax.Array, r: int | None = None) -> tuple[jax.Array, jax.Array]:
    """The first r (default MEMBERSHIP_TESTS) records of the race's draws: ids [S, M] i32 and logits cand_x [S, M]
    in race order (-inf: no draw) -> (ids [S, r], logits [S, r], -inf where a row has fewer records). A record's
    logit is strictly above every earlier draw's; the first draw is always one."""
    s, m = cand_x.shape
    r = min(r or MEMBERSHIP_TESTS, m)
    rec_x, rec_ids = [jnp.full((s,), NEG_INF, cand_x.dtype)] * r, [jnp.zeros((s,), jnp.int32)] * r
    best, found = jnp.full((s,), NEG_INF, cand_x.dtype), jnp.zeros((s,), jnp.int32)
    for j in range(m):  # unrolled over the few draws: elementwise on [S], one small fusion
        x_j = cand_x[:, j]
        is_record = x_j > best
        for slot in range(r):
            put = is_record & (found == slot)
            rec_x[slot] = jnp.where(put, x_j, rec_x[slot])
            rec_ids[slot] = jnp.where(put, ids[:, j], rec_ids[slot])
        best, found = jnp.maximum(best, x_j), found + is_record
    return jnp.stack(rec_ids, axis=1).astype(jnp.int32), jnp.stack(rec_x, axis=1)


def first_member(ok: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(ids [S] of the first True of ok [S, R] in each row, else ids[:, 0]; whether the row has one [S] bool),
    unrolled over the few columns: elementwise, so it fuses with what computes ok (no argmax, no gather)."""
    token, some = ids[:, 0], ok[:, 0]
    for j in range(ok.shape[1] - 1, -1, -1):
        token = jnp.where(ok[:, j], ids[:, j], token)
        some = some | ok[:, j]
    return token, some


def _sums_one_pass(x, w, e, cand_x):
    """(above [S, R] f32: the sum of w [S, V] over x > cand_x[:, j], total [S] f32: the sum of e [S, V]) as ONE
    variadic reduction: a single kernel that reads each row of x once. (Separate sums of the same operands rely
    on XLA's sibling fusion, which a GPU profile showed not to happen.)"""
    r = cand_x.shape[1]
    operands = [jnp.where(x > cand_x[:, j:j + 1], w, 0.0) for j in range(r)] + [e]
    sums = lax.reduce(operands, [jnp.float32(0.0)] * (r + 1), lambda p, q: tuple(a + b for a, b in zip(p, q)), (1,))
    return jnp.stack(sums[:r], axis=1), sums[r]


def _sums_per_draw(x, w, e, cand_x):
    """``_sums_one_pass`` one draw at a time (a loop of R passes): XLA's CPU backend runs a variadic or fused
    multi-output reduction unvectorised, ~5x slower than this."""
    above = lax.map(lambda c: jnp.sum(jnp.where(x > c[:, None], w, 0.0), axis=-1), cand_x.T)
    return above.T, jnp.sum(e, axis=-1)


def survives(x, cand_x, floor, scale, temperature, top_k, top_p, one_pass: bool) -> jax.Array:
    """Exact membership [S, R] bool of draws with logits cand_x [S, R] (-inf: none, never a member) in the
    survivors of x [S, V] >= floor [S]: a row with top_p [S] < 1 keeps a draw iff the mass strictly above it is
    < top_p * mass(x >= floor), mass = exp((x - scale) / T) with scale [S] near the row maximum; any other row
    keeps a draw iff fewer than top_k [S] tokens lie strictly above it. (A top-p row's top-k must be held by floor
    or the row left to the exact rows: the caller's part.) ``one_pass`` picks ``_sums_one_pass`` (the GPU's)
    over ``_sums_per_draw``."""
    by_mass = top_p < 1.0
    e = jnp.where(x >= floor[:, None], jnp.exp((x - scale[:, None]) * (1.0 / temperature)[:, None]), 0.0)
    w = jnp.where(by_mass[:, None], e, 1.0)  # a draw is >= floor: tokens above it are too
    above, total = (_sums_one_pass if one_pass else _sums_per_draw)(x, w, e, cand_x)
    limit = jnp.where(by_mass, top_p * total, top_k.astype(jnp.float32))
    return (cand_x > NEG_INF) & (above < limit[:, None])

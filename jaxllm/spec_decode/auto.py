"""The automatic speculation rule (``speculative_config`` without ``disable_by_batch_size``; plain Python +
numpy, no jax): each step, which running decodes verify drafts.

Yield: a sequence whose drafts are each accepted with probability a (until the first rejection) emits
E = (1 - a^(k+1)) / (1 - a) tokens per verifying step instead of 1. ``AcceptanceTracker`` estimates a per
request from its verified steps (an exponentially weighted count of accepted drafts and of rejections, with an
optimistic prior, so that every request is tried), and lets the counts fade with the steps since the request's last
verification, so that a request whose drafts fail stops being drafted and is tried again now and then. With
n-gram drafts, the expected extra tokens E - 1 are weighted by the chance that a lookup finds a draft at all
(``match_rate``): a request whose text does not repeat is not looked up every step.
Cost: ``SpecCostModel`` (cost.py), the roofline of the step with and without the drafts.

``choose`` sorts the candidate decodes by expected extra tokens and takes the prefix (at most the compiled cap)
that maximizes the step's tokens per second; the step speculates when that beats the plain step by
``MIN_GAIN``. A large batch is compute-bound, where every draft token costs its full FLOPs and no prefix pays:
speculation turns itself off, and back on when the batch shrinks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxllm.spec_decode.cost import SpecCostModel, expected_tokens

PRIOR_ACCEPTANCE = 0.7  # a request's estimate before any of its drafts was verified (optimistic: it is tried)
CEILING_ACCEPTANCE = 0.8  # the acceptance the compiled cap on speculating sequences is sized for
REQUEST_DECAY = 0.9  # per verified step of a request: its counts cover its last ~10 verifications
PRIOR_WEIGHT = 0.5  # the prior counts as half a verification
HALF_LIFE_STEPS = 64  # counts halve over this many engine steps without a verification
# n-gram lookup counts fade slower: a lookup makes its step wait for the previous step's token (no overlap of host
# and device work), so a request whose text does not repeat is looked up again only about every 45 steps
LOOKUP_HALF_LIFE_STEPS = 512
MIN_EXTRA_TOKENS = 0.1  # a request whose accepted drafts are expected to add less per step is not drafted
MIN_MATCH_RATE = 0.15  # nor one whose n-gram lookups find a draft less often than this
MIN_GAIN = 1.1  # a step speculates when it is expected to emit 10% more tokens per second


class AcceptanceTracker:
    """Per request (seq_id): the per-draft acceptance probability, and the chance that an n-gram lookup finds a
    draft at all (``match_rate``)."""

    def __init__(self) -> None:
        self.step = 0  # engine steps scheduled (the clock of the fading)
        self._seqs: dict[int, list] = {}  # seq_id -> [accepted drafts, rejections, step of the last verification]
        self._lookups: dict[int, list] = {}  # seq_id -> [lookups that found drafts, that found none, step]

    def _faded(self, counts: list, half_life: float = HALF_LIFE_STEPS) -> tuple[float, float]:
        f = 0.5 ** ((self.step - counts[2]) / half_life)
        return counts[0] * f, counts[1] * f

    def match_rate(self, seq_id: int) -> float:
        """The chance that the next n-gram lookup finds a draft: (hits + 3) / (lookups + 4), the counts fading
        with the steps since the last lookup (``LOOKUP_HALF_LIFE_STEPS``). A request whose text does not repeat
        drops below ``MIN_MATCH_RATE`` after 17 misses in a row and is then looked up again about every 45
        steps."""
        counts = self._lookups.get(seq_id)
        hits, misses = self._faded(counts, LOOKUP_HALF_LIFE_STEPS) if counts is not None else (0.0, 0.0)
        return (hits + 3) / (hits + misses + 4)

    def lookup(self, seq_id: int, found: bool) -> None:
        """An n-gram lookup of ``seq_id`` found a draft (``found``) or none."""
        counts = self._lookups.setdefault(seq_id, [0.0, 0.0, self.step])
        hits, misses = self._faded(counts, LOOKUP_HALF_LIFE_STEPS)
        counts[:] = [hits + found, misses + (not found), self.step]

    def estimate(self, seq_id: int) -> float:
        """The acceptance estimate of ``seq_id``: its faded counts plus ``PRIOR_WEIGHT`` verifications at
        ``PRIOR_ACCEPTANCE``. Four or five rejections in a row bring it below 0.1."""
        counts = self._seqs.get(seq_id)
        s, r = self._faded(counts) if counts is not None else (0.0, 0.0)
        return (s + PRIOR_WEIGHT * PRIOR_ACCEPTANCE) / (s + r + PRIOR_WEIGHT)

    def observe(self, seq_id: int, num_drafts: int, num_accepted: int) -> None:
        """A verified step of ``seq_id``: ``num_accepted`` of ``num_drafts`` drafts accepted, a rejection when
        fewer."""
        counts = self._seqs.setdefault(seq_id, [0.0, 0.0, self.step])
        s, r = self._faded(counts)
        counts[:] = [s * REQUEST_DECAY + num_accepted, r * REQUEST_DECAY + (num_accepted < num_drafts), self.step]

    def forget(self, seq_id: int) -> None:
        self._seqs.pop(seq_id, None)
        self._lookups.pop(seq_id, None)


@dataclasses.dataclass
class StepLoad:
    """The plain step the rule weighs drafts against: its query tokens, the K/V tokens it reads, its
    (query, key) pairs."""

    tokens: int = 0
    keys: int = 0
    pairs: int = 0


def may_pay(cost: SpecCostModel | None, load: StepLoad, num_decodes: int, decode_keys: int, k: int,
            max_seqs: int) -> bool:
    """Whether any speculation could pay in a step of ``load`` with ``num_decodes`` decodes whose contexts hold
    ``decode_keys`` tokens: the best case of ``choose``, every draft accepted. False in a compute-bound batch,
    which then needs no per-request estimates."""
    if cost is None:
        return True
    m = np.arange(min(num_decodes, max_seqs) + 1, dtype=np.float64)
    context = decode_keys / num_decodes
    seconds = cost.seconds(load.tokens + m * k, load.keys + 0 * m, load.pairs + m * k * context, m, m * context)
    rate = (load.tokens + m * k) / seconds
    return bool(rate.max() >= MIN_GAIN * rate[0])


def choose(cost: SpecCostModel | None, load: StepLoad, candidates: list[tuple[int, int, int, float, float]],
           max_seqs: int) -> list[int]:
    """The seq_ids that speculate this step. ``candidates``: (seq_id, number of drafts it may verify, its
    context length, its acceptance estimate, the chance it gets drafts at all) for every running decode that
    may speculate. Without a cost model (a runner that gives none) every candidate worth drafting speculates."""
    k = np.array([c[1] for c in candidates], np.float64)
    accepted = expected_tokens([c[3] for c in candidates], k) - 1
    match = np.array([c[4] for c in candidates])
    extra = accepted * match
    order = [i for i in np.argsort(-extra, kind="stable")
             if accepted[i] >= MIN_EXTRA_TOKENS and match[i] >= MIN_MATCH_RATE][:max_seqs]
    if not order or cost is None:
        return [candidates[i][0] for i in order]
    ctx = np.array([candidates[i][2] for i in order], np.float64)
    kk = k[order]
    m = np.arange(len(order) + 1, dtype=np.float64)
    tokens = load.tokens + np.concatenate([[0.0], np.cumsum(kk)])
    pairs = load.pairs + np.concatenate([[0.0], np.cumsum(kk * ctx)])
    spec_keys = np.concatenate([[0.0], np.cumsum(ctx)])
    seconds = cost.seconds(tokens, load.keys + 0 * m, pairs, m, spec_keys)
    emitted = load.tokens + np.concatenate([[0.0], np.cumsum(extra[order])])
    rate = emitted / seconds
    best = int(np.argmax(rate))
    if best == 0 or rate[best] < MIN_GAIN * rate[0]:
        return []
    return [candidates[i][0] for i in order[:best]]


def speculating_seqs_cap(config, max_num_seqs: int, cost: SpecCostModel | None) -> int:
    """D, the most sequences one step may speculate for (the runner's logits rows and the draft's q arrays are
    compiled for it): ``disable_by_batch_size`` when given (vLLM's rule: all running sequences speculate up to
    that many), else what the cost model allows at ``CEILING_ACCEPTANCE`` (every sequence without one)."""
    if config.disable_by_batch_size is not None:
        return min(max_num_seqs, config.disable_by_batch_size)
    if cost is None:
        return max_num_seqs
    return cost.max_speculating_seqs(max_num_seqs, CEILING_ACCEPTANCE)

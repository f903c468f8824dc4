"""Fake runners for engine tests: a paged "KV cache" of token ids that catches any bookkeeping error.

``CacheCheckingRunner`` writes each scheduled token (and its position) into the slot its block table maps
it to, then reads every position ``0 .. end-1`` of every sequence back *through the cache* and checks it
holds that sequence's token. The next token is a function of what was read from the cache, like a real
model. A wrong block table, a shared block overwritten with other tokens, an evicted cached block reused,
a stale prefix-cache hit: each shows up as an assertion or a different output. Host-tier copies
(``batch.swap_out`` / ``swap_in``) move blocks between that cache and a dict of host slots, in the order the
real runner makes them.
"""

from __future__ import annotations

from jaxllm.engine import LLMEngine
from jaxllm.engine.batch import RunnerOutput, ScheduledBatch, TokenLogprobs

VOCAB = 64


def model_next_token(tokens: list[int], rng_seed: int, output_index: int, greedy: bool) -> int:
    """The fake model: a deterministic function of the context (and of the seed stream when sampling)."""
    tail = tokens[-4:]
    t = (sum(x * (i + 3) for i, x in enumerate(tail)) + 7 * len(tokens)) % VOCAB
    if not greedy:
        t = (t + 13 * rng_seed + 101 * output_index) % VOCAB
    return t


def fake_logprob(token: int) -> float:
    return -((token % 7) + 1) / 10.0


def fake_top(k: int) -> list[tuple[int, float]]:
    return [(j, -j / 10.0) for j in range(k)]


class CacheCheckingRunner:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        script: dict | None = None,
    ) -> None:
        self.block_size = block_size
        self.cache = [None] * (num_blocks * block_size)  # slot -> (token, position)
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.script = script or {}  # tuple(prompt) -> list of output tokens to emit, by output_index
        self.batches: list[list[tuple[int, int, int, bool]]] = []  # (seq_id, start, n, sample) per step
        self.host: dict[int, list] = {}  # host slot -> the block's cache entries

    def slot(self, block_table: list[int], pos: int) -> int:
        return block_table[pos // self.block_size] * self.block_size + pos % self.block_size

    def next_token(self, s, context: list[int]) -> int:
        p = s.sampling_params
        prompt = tuple(s.token_ids[: s.num_prompt_tokens])
        if prompt in self.script and s.output_index < len(self.script[prompt]):
            t = self.script[prompt][s.output_index]
        else:
            t = model_next_token(context, s.rng_seed, s.output_index, p.temperature < 1e-5)
        if p.allowed_token_ids:
            t = p.allowed_token_ids[t % len(p.allowed_token_ids)]
        while t in s.banned_token_ids:
            t = (t + 1) % VOCAB
        return t

    def _swap(self, batch: ScheduledBatch) -> None:
        """Swap-outs read the device, then write the host (in order), then swap-ins read the host and write
        the device; a swapped-in slot that was never written fails."""
        bs = self.block_size
        outs = [(slot, self.cache[b * bs:(b + 1) * bs]) for b, slot in batch.swap_out]
        for slot, data in outs:
            self.host[slot] = data
        ins = [(b, self.host[slot]) for slot, b in batch.swap_in]
        for b, data in ins:
            self.cache[b * bs:(b + 1) * bs] = data

    def execute(self, batch: ScheduledBatch) -> RunnerOutput:
        return self._run(batch, lambda token: token)

    def _run(self, batch: ScheduledBatch, resolve) -> RunnerOutput:
        """``resolve`` maps a token id of the batch to the token (placeholders of asynchronous scheduling)."""
        assert batch.seqs, "empty batch"
        if self.max_num_seqs is not None:
            assert batch.num_seqs <= self.max_num_seqs
        if self.max_num_batched_tokens is not None:
            assert batch.num_tokens <= self.max_num_batched_tokens
        assert len({s.seq_id for s in batch.seqs}) == batch.num_seqs
        self.batches.append([(s.seq_id, s.start, s.num_new_tokens, s.sample) for s in batch.seqs])
        self._swap(batch)
        # 1) write K/V of every scheduled token (all sequences first, as the runner's layers do)
        for s in batch.seqs:
            assert s.num_new_tokens >= 1 and s.end <= len(s.token_ids)
            assert len(s.block_table) * self.block_size >= s.end, "block table too short"
            assert s.sample == (s.end == len(s.token_ids))
            for pos in range(s.start, s.end):
                self.cache[self.slot(s.block_table, pos)] = (resolve(s.token_ids[pos]), pos)
        # 2) attend: read the whole context back through the block table
        out = RunnerOutput(sampled={})
        for s in batch.seqs:
            context = []
            for pos in range(s.end):
                entry = self.cache[self.slot(s.block_table, pos)]
                want = (resolve(s.token_ids[pos]), pos)
                assert entry == want, f"seq {s.seq_id} pos {pos}: cache has {entry}, expected {want}"
                context.append(entry[0])
            p = s.sampling_params
            if s.want_prompt_logprobs:
                last = min(s.end, s.num_prompt_tokens - 1)
                out.prompt_logprobs[s.seq_id] = [
                    TokenLogprobs(
                        s.token_ids[q], fake_logprob(s.token_ids[q]), 1 + q % 3, fake_top(p.prompt_logprobs)
                    )
                    for q in range(s.start + 1, last + 1)
                ]
            if s.sample:
                t = self.next_token(s, context)
                out.sampled[s.seq_id] = t
                if p.logprobs is not None:
                    out.logprobs[s.seq_id] = TokenLogprobs(
                        t, fake_logprob(t), 1 + t % 3, fake_top(p.logprobs)
                    )
        return out


class AsyncCacheCheckingRunner(CacheCheckingRunner):
    """The same fake with ``dispatch``/``fetch`` (asynchronous scheduling): a negative token id ``-(row + 1)``
    is the token sampled for row ``row`` of the previously dispatched batch, as the real runner reads it on
    device. Placeholders may only be a decode's single new token; ``max_in_flight`` records the overlap."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.prev_sampled: list[int | None] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def _resolve(self, token: int) -> int:
        if token >= 0:
            return token
        row = -token - 1
        assert row < len(self.prev_sampled) and self.prev_sampled[row] is not None, f"bad placeholder {token}"
        return self.prev_sampled[row]

    def dispatch(self, batch: ScheduledBatch) -> RunnerOutput:
        for s in batch.seqs:
            placeholders = [p for p in range(s.start, s.end) if s.token_ids[p] < 0]
            assert placeholders in ([], [len(s.token_ids) - 1]) and (not placeholders or s.num_new_tokens == 1)
        out = self._run(batch, self._resolve)
        self.prev_sampled = [out.sampled.get(s.seq_id) for s in batch.seqs]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return out

    def fetch(self, out: RunnerOutput) -> RunnerOutput:
        self.in_flight -= 1
        return out


DEFAULT_ASYNC = False  # set by tests/engine/conftest.py: every engine test runs in both modes


def reference_greedy(prompt: list[int], max_tokens: int, eos: int | None = None) -> list[int]:
    """What an unconstrained engine must produce with the fake model (greedy, no stop strings)."""
    toks = list(prompt)
    out = []
    while len(out) < max_tokens:
        t = model_next_token(toks, 0, len(out), True)
        toks.append(t)
        out.append(t)
        if t == eos:
            break
    return out


def make_engine(
    num_blocks=256,
    block_size=4,
    max_num_seqs=8,
    max_num_batched_tokens=64,
    max_model_len=128,
    enable_prefix_caching=True,
    eos_token_ids=None,
    tokenizer=None,
    seed=0,
    script=None,
    async_scheduling=None,
    runner=None,
    scheduling_policy="fcfs",
    **host_tier,
):
    """(LLMEngine, CacheCheckingRunner) wired together; the vocabulary is the tokenizer's when there is one.
    ``async_scheduling`` None: ``DEFAULT_ASYNC``. ``runner``: a fake built by the test (e.g. one that fails)
    instead of a CacheCheckingRunner of these sizes. ``host_tier``: num_host_blocks, host_prefix_cache,
    preemption_mode."""
    async_scheduling = DEFAULT_ASYNC if async_scheduling is None else async_scheduling
    if runner is None:
        cls = AsyncCacheCheckingRunner if async_scheduling else CacheCheckingRunner
        runner = cls(num_blocks, block_size, max_num_seqs, max_num_batched_tokens, script)
    eng = LLMEngine(
        runner,
        num_blocks=num_blocks,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len,
        vocab_size=len(tokenizer) if tokenizer is not None else VOCAB,
        enable_prefix_caching=enable_prefix_caching,
        eos_token_ids=eos_token_ids,
        tokenizer=tokenizer,
        seed=seed,
        async_scheduling=async_scheduling,
        scheduling_policy=scheduling_policy,
        **host_tier,
    )
    return eng, runner

"""The draft model of draft-model speculative decoding, on the runner side (jax).

The draft is a smaller model of the target's vocabulary with its own paged KV cache of the same number of
blocks as the target's, addressed by the same block tables and slots: the scheduler and block manager serve
both caches at once. The draft runs only for the decodes of a speculating step (their 1 + k slots allocated):

- catch-up: the draft's K/V of positions it has not computed for the sequence yet (the whole context the first
  time, as a chunked prefill) is written into the sequence's slots. A short gap (after a step whose k drafts
  were all accepted: the last draft) is folded into the first draft step instead, as the head of that
  sequence's query, so that a well-accepted sequence costs k draft forwards per step, not k + 1.
  ``_computed`` records, per sequence and block table, how many leading positions hold the draft's K/V of the
  sequence's tokens; positions at or past the target's ``num_computed_tokens`` (rejected drafts) do not count,
  and a new block table (preemption, swap-in) starts from 0. Prefix-cache blocks shared with other sequences
  may be written again: K/V of the same tokens at the same positions, equal up to rounding (another chunking),
  which can only change a draft, never an output.
- k decode steps: the first reads the sequence's last token (after the folded gap), each next one the
  previous step's choice, still on device (the forward's negative-id placeholders), so the k drafts reach the
  host with one transfer.

So steps that do not speculate (``disable_by_batch_size``, structured outputs, overlapped steps) cost the draft
nothing. A greedy request's drafts are the draft's argmax tokens: a one-hot q, for which the runner's
verification (sample each row with the plain sampler, accept while equal; ``rejection.py``) is exactly the
rejection-sampling rule, and the outputs are token-identical to no speculation. A random request's drafts are
drawn from the draft's processed distribution q (``draft_sampling.py``), which stays on the device
(``take_probs``: k arrays [D, V], D the most sequences that speculate in a step) for the target's sampler to
apply the rule with p / q (``rejection.sample_and_verify``).

Sleep mode (``SleepMode``, as the target's runner): the draft's weights and cache are freed and restored with
the target's; weights discarded at level 2 are read from the draft checkpoint again (``weights_source``).
``served_weights`` / ``update_weights`` (``WeightUpdates``, as the target's runner) swap its parameters in place
(the benchmark's echo weights: jaxllm/bench/echo_weights.py).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxllm.models.attention import AttentionMetadata
from jaxllm.parallel.multihost import program_arg
from jaxllm.runner.buckets import Bucket, BucketLadder
from jaxllm.runner.input_batch import StepInputs, dummy_step_inputs, pack_step_inputs
from jaxllm.runner.kernel_policy import KernelPolicy
from jaxllm.runner.kv_cache_plan import KVCachePlan
from jaxllm.runner.programs import ForwardKey, Programs
from jaxllm.runner.sleep_mode import SleepMode
from jaxllm.runner.spec_rows import DraftProbs
from jaxllm.runner.step import make_forward
from jaxllm.runner.weight_updates import WeightUpdates
from jaxllm.spec_decode.config import SpeculativeConfig
from jaxllm.spec_decode.cost import StepCost, step_cost
from jaxllm.spec_decode.draft_sampling import (
    DraftSampleKey,
    draft_row_arrays,
    is_random,
    make_draft_sample,
    uses_top_k_top_p,
)

logger = logging.getLogger("jaxllm")


def make_draft(args, target_cfg, mesh, ladder: BucketLadder, max_blocks_per_seq: int,
               target_arrays=None) -> DraftRunner | None:
    """The DraftRunner of ``args.speculative_config`` with method "draft_model" (loaded through
    ``jaxllm.load.load_draft_model`` onto the target's mesh), its EagleRunner with method "eagle"
    (``target_arrays``: a callable returning the target's current (embedding, LM head) arrays), else None."""
    from jaxllm.load import load_draft_model

    spec = SpeculativeConfig.from_dict(args.speculative_config)
    if spec is not None and spec.method == "eagle":
        from jaxllm.spec_decode.eagle_runner import make_eagle

        return make_eagle(args, target_cfg, mesh, ladder, max_blocks_per_seq, target_arrays)
    if spec is None or spec.method != "draft_model":
        return None
    model, cfg = load_draft_model(args, target_cfg, mesh)
    draft = DraftRunner(model, cfg, target_cfg, mesh, args, ladder, max_blocks_per_seq)
    draft.weights_source = lambda: load_draft_model(args, target_cfg, mesh)[0]  # sleep level 2
    return draft


def shared_num_blocks(num_blocks: int, target_block_bytes: int, draft_block_bytes: int, reserved_bytes: int) -> int:
    """The blocks of both caches (same count) that the bytes of ``num_blocks`` target blocks hold once
    ``reserved_bytes`` are set aside (at least one); ValueError when the reserve leaves none."""
    blocks = (num_blocks * target_block_bytes - reserved_bytes) // (target_block_bytes + draft_block_bytes)
    if blocks < 1 and reserved_bytes:
        raise ValueError(f"the target's and the draft's KV caches and the draft distributions ({reserved_bytes / 2**30:.2f} "
                         f"GiB) do not fit the memory left for the KV cache: raise gpu_memory_utilization or lower "
                         f"max_num_seqs or num_speculative_tokens")
    return max(1, blocks)


class DraftRunner(SleepMode, WeightUpdates):
    """``model``: the draft NNX module on ``mesh``; ``cfg`` / ``target_cfg``: the draft's and the target's
    ModelConfig (ValueError when their vocabularies differ); ``args``: the target's resolved EngineArgs.

    ``lag``: how far the draft's positions trail the tokens it reads: 0 for a draft model (position p reads
    token p); 1 for an EAGLE head (position p reads token p + 1 and the target's hidden state at p, so it can
    compute only the positions before the last computed one)."""

    lag = 0

    def __init__(self, model, cfg, target_cfg, mesh, args, ladder: BucketLadder, max_blocks_per_seq: int):
        if cfg.vocab_size != target_cfg.vocab_size:
            raise ValueError(f"speculative_config model: the draft's vocab_size ({cfg.vocab_size}) differs from the "
                             f"target's ({target_cfg.vocab_size}); a draft model must share the target's tokenizer")
        if cfg.max_position_embeddings < args.max_model_len:
            raise ValueError(f"speculative_config model: the draft's max_position_embeddings "
                             f"({cfg.max_position_embeddings}) is below max_model_len ({args.max_model_len})")
        self.cfg, self.ladder, self.block_size = cfg, ladder, args.block_size
        self.max_blocks_per_seq = max_blocks_per_seq
        self.graphdef, state = nnx.split(model)
        self.params, self._treedef = jax.tree_util.tree_flatten(state)
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self.cache_plan = KVCachePlan(cfg, mesh, args, cfg.dtype)
        self._kv_bytes_given = args.kv_cache_memory_bytes is not None and args.num_gpu_blocks_override is None
        # the target's attention choice rules for the draft's shapes (no long-prefill program: catch-up chunks
        # take the path of other steps)
        self._attention = KernelPolicy(cfg, jnp.dtype(cfg.dtype), self.cache_plan.shapes()[0], mesh.devices.size,
                                       attention_backend=args.attention_backend,
                                       decode_splits=args.attention_decode_splits,
                                       fp8_dot=args.attention_fp8_dot).attention(long_prefill=False)
        self.kv_caches: list | None = None  # allocate(): the target's number of blocks
        self._forward = make_forward(self.graphdef, self._treedef, mesh)
        self.programs = Programs(self._compile)  # the draft forward of each bucket (ForwardKey)
        self._max_seqs = ladder.buckets[-1].num_seqs
        self._no_tokens = jax.device_put(np.zeros(self._max_seqs, np.int32), self._replicated)
        # seq_id -> (its block table list, leading positions whose draft K/V is written); see the docstring
        self._computed: dict[int, tuple[list, int]] = {}
        spec = SpeculativeConfig.from_dict(args.speculative_config)
        self._num_k = spec.num_speculative_tokens
        self._q_rows = self._max_seqs  # D: share_device_memory sets the runner's cap on speculating sequences
        self._sample = make_draft_sample()
        self._probs: DraftProbs | None = None  # the last proposal's q (sampled drafts), until take_probs()

    def share_device_memory(self, target_plan: KVCachePlan, max_spec_seqs: int) -> None:
        """Both caches hold the same number of blocks: when the target's cache was sized in bytes (to fill the
        device, or ``kv_cache_memory_bytes``), scale its block count so that the two fit in those bytes. A cache
        that fills the device also leaves room for the sampled drafts' q arrays (``q_bytes``) of at most
        ``max_spec_seqs`` speculating sequences (D, the runner's cap), which live between programs."""
        self._q_rows = max(1, min(self._max_seqs, max_spec_seqs))
        if target_plan.fills_device or self._kv_bytes_given:
            reserved = self.q_bytes if target_plan.fills_device else 0
            target_plan.num_blocks = shared_num_blocks(target_plan.num_blocks, target_plan.bytes_per_block,
                                                       self.bytes_per_block, reserved)

    def step_cost(self, peaks, num_devices: int) -> StepCost:
        """The roofline cost of one draft forward (the automatic rule's, ``jaxllm.spec_decode.cost``)."""
        return step_cost(self.cfg, peaks, self.cache_plan.dtype.itemsize, num_devices)

    @property
    def q_bytes(self) -> int:
        """The k arrays [D, V] float32 of one proposal's draft distributions (``take_probs``)."""
        return self._num_k * self._q_rows * self.cfg.vocab_size * 4

    @property
    def bytes_per_block(self) -> int:
        return self.cache_plan.bytes_per_block

    def allocate(self, num_blocks: int) -> None:
        """A zeroed draft cache of ``num_blocks`` blocks (the target's count: same block ids)."""
        self.cache_plan.num_blocks = num_blocks
        self.kv_caches = self.cache_plan.allocate()
        self._computed = {}

    @property
    def num_blocks(self) -> int:
        return self.cache_plan.num_blocks

    def _set_cache_shapes(self, num_blocks: int) -> None:  # SleepMode: the cache released
        self.cache_plan.num_blocks = num_blocks
        self.kv_caches = self.cache_plan.shapes()

    def _allocate_cache(self) -> None:  # SleepMode: the cache restored
        self.allocate(self.num_blocks)

    @property
    def num_compilations(self) -> int:
        return len(self.programs)

    def compile(self, num_blocks: int) -> None:
        """Compile the draft forward of every bucket (catch-up chunks and draft steps pick from the target's
        ladder) in parallel threads, against a cache of ``num_blocks`` blocks (before it exists)."""
        self.cache_plan.num_blocks = num_blocks
        keys = [ForwardKey(b) for b in self.ladder.buckets]
        keys += [DraftSampleKey(s, f) for s in sorted({b.num_seqs for b in self.ladder.buckets}) for f in (False, True)]
        self.programs.compile_all(keys, lambda key, error: False)

    def _compile(self, key: ForwardKey | DraftSampleKey):
        if isinstance(key, DraftSampleKey):
            logits = jax.ShapeDtypeStruct((key.num_seqs, self.cfg.vocab_size), jnp.float32, sharding=self._replicated)
            rows = draft_row_arrays([], 0, key.num_seqs, self.cfg.vocab_size)
            return self._sample.lower(logits, rows, out_rows=self._max_seqs, q_rows=self._q_rows,
                                      top_k_top_p=key.top_k_top_p).compile()
        b = key.bucket
        padding = jax.device_put(pack_step_inputs(dummy_step_inputs(b, self.max_blocks_per_seq)), self._replicated)
        return self._forward.lower(self.params, self.cache_plan.shapes(), padding, self._no_tokens, [],
                                   dims=(b.num_tokens, b.num_seqs, self.max_blocks_per_seq), return_hidden=False,
                                   attention_impl=self._attention, logits_sharding=self._replicated).compile()

    def propose(self, items) -> list[tuple[int, ...]]:
        """``items``: [(sequence, n >= 1)] with the sequence's last token not yet computed and slots allocated for
        its next 1 + n positions -> n draft tokens per sequence (argmax for greedy requests, drawn from q for
        random ones; then ``take_probs`` holds the q). Sequences are ordered by n, longest first, so each draft
        step's sequences are a prefix of the previous step's and keep their row (the placeholder -(row + 1)
        reads the previous step's choice)."""
        order = sorted(range(len(items)), key=lambda i: -items[i][1])
        seqs = [items[i][0] for i in order]
        counts = [items[i][1] for i in order]
        sampled = any(is_random(s, self.cfg.vocab_size) for s in seqs)
        filters = sampled and uses_top_k_top_p(seqs, self.cfg.vocab_size)
        starts = self._catch_up(seqs)
        steps, probs, prev = [], [], self._no_tokens
        for j in range(counts[0] if counts else 0):
            n = sum(c > j for c in counts)
            pieces = [(s, a, s.token_ids[a + self.lag:]) for s, a in zip(seqs[:n], starts)] if j == 0 else [
                (s, len(s.token_ids) - 1 - self.lag + j, [-(r + 1)]) for r, s in enumerate(seqs[:n])]
            prev, logits, bucket = self._run(pieces, prev)
            if sampled:
                rows = draft_row_arrays(seqs[:n], j, bucket.num_seqs, self.cfg.vocab_size)
                sample = self.programs.get(DraftSampleKey(bucket.num_seqs, filters))
                prev, q = sample(logits, program_arg(rows, self._replicated))
                probs.append(q)
            steps.append(prev)
        for s, c in zip(seqs, counts):  # an EAGLE head's draft positions read its own states: recomputed
            self._computed[s.seq_id] = (s.block_table, len(s.token_ids) - 1 - self.lag + (0 if self.lag else c))
        if len(self._computed) > 4 * max(len(seqs), 256):  # forget finished sequences now and then
            live = {s.seq_id for s in seqs}
            self._computed = {k: v for k, v in self._computed.items() if k in live}
        self._probs = None
        if probs:
            arrays = tuple(probs) + (probs[-1],) * (self._num_k - len(probs))  # rows past a sequence's drafts: unread
            self._probs = DraftProbs(arrays, {s.seq_id: r for r, s in enumerate(seqs)})
        host = np.asarray(jax.device_get(steps)) if steps else np.zeros((0, self._max_seqs), np.int32)
        out: list[tuple[int, ...]] = [()] * len(items)
        for row, (i, c) in enumerate(zip(order, counts)):
            out[i] = tuple(int(t) for t in host[:c, row])
        return out

    def take_probs(self) -> DraftProbs | None:
        """The last proposal's distributions (None: no sampled draft), handed over once: the step that
        verifies them takes them."""
        probs, self._probs = self._probs, None
        return probs

    def neutral_probs(self) -> DraftProbs:
        """Zero distributions of the verification's shapes (k arrays [D, V]): what the sampler programs are
        compiled and first run against (start-up only: not kept)."""
        zeros = jax.device_put(np.zeros((self._q_rows, self.cfg.vocab_size), np.float32), self._replicated)
        return DraftProbs((zeros,) * self._num_k, {})

    def _catch_up(self, seqs) -> list[int]:
        """Write the draft's K/V of the positions before each sequence's last token that it lacks, in chunks of
        the largest bucket (no host sync); gaps of at most k positions are left to the first draft step while its
        query fits that bucket. Returns each sequence's first position the first draft step computes."""
        largest = self.ladder.buckets[-1]
        chunk, used, starts, folded = [], 0, [], len(seqs)
        for s in seqs:
            table, done = self._computed.get(s.seq_id, (None, 0))
            end = len(s.token_ids) - 1 - self.lag
            start = min(done, end) if table is s.block_table else 0
            if end - start <= self._num_k + self.lag and folded + end - start <= largest.num_tokens:
                folded += end - start
                starts.append(start)
                continue
            starts.append(end)
            while start < end:
                if used == largest.num_tokens or len(chunk) == largest.num_seqs:
                    self._run(chunk, self._no_tokens)
                    chunk, used = [], 0
                stop = min(end, start + largest.num_tokens - used)
                chunk.append((s, start, s.token_ids[start + self.lag:stop + self.lag]))
                used += stop - start
                start = stop
        if chunk:
            self._run(chunk, self._no_tokens)
        return starts

    def _run(self, pieces, prev):
        """One draft forward over ``pieces`` [(sequence, first position, query ids)] (K/V written into the
        sequences' slots) -> (the greedy id after each piece's last token [max_num_seqs], the logits there
        [S, V], the bucket), on the device."""
        bucket = self.ladder.pick(sum(len(ids) for _, _, ids in pieces), len(pieces))
        return *self._step(self._inputs(pieces, bucket), prev, bucket), bucket

    def _step(self, inputs: StepInputs, prev, bucket: Bucket):
        packed = program_arg(pack_step_inputs(inputs), self._replicated)
        forward = self.programs.get(ForwardKey(bucket))  # compiled now under enforce_eager
        self.kv_caches, logits, _, greedy = forward(self.params, self.kv_caches, packed, prev, [])
        return greedy.token_ids, logits  # the forward's argmax ids [max_num_seqs]: no second program when greedy

    def _inputs(self, pieces, bucket: Bucket) -> StepInputs:
        """The ragged step of ``pieces``, padded to ``bucket`` (padding tokens write nothing)."""
        bs, T, S = self.block_size, bucket.num_tokens, bucket.num_seqs
        ids, pos, slots, qsl = np.zeros(T, np.int32), np.zeros(T, np.int32), np.full(T, -1, np.int32), [0]
        tables = np.zeros((S, self.max_blocks_per_seq), np.int32)
        lens = np.zeros(S, np.int32)
        for r, (seq, start, query) in enumerate(pieces):
            a, n, table = qsl[-1], len(query), seq.block_table
            p = np.arange(start, start + n)
            ids[a:a + n] = query
            pos[a:a + n] = p
            slots[a:a + n] = np.asarray(table, np.int32)[p // bs] * bs + p % bs
            tables[r, :len(table)] = table
            lens[r] = start + n
            qsl.append(a + n)
        qsl_arr = np.full(S + 1, qsl[-1], np.int32)
        qsl_arr[:len(qsl)] = qsl
        return StepInputs(ids, pos, np.maximum(qsl_arr[1:] - 1, 0), AttentionMetadata(slots, qsl_arr, lens, tables))

    def run_each_program_once(self) -> None:
        """Execute every compiled draft forward once on all-padding inputs (nothing is written), so that
        first-execution costs land at start-up."""
        for key in list(self.programs.compiled):
            if isinstance(key, DraftSampleKey):
                logits = np.zeros((key.num_seqs, self.cfg.vocab_size), np.float32)
                rows = draft_row_arrays([], 0, key.num_seqs, self.cfg.vocab_size)
                jax.block_until_ready(self.programs.get(key)(jax.device_put(logits, self._replicated), rows))
                continue
            inputs = dummy_step_inputs(key.bucket, self.max_blocks_per_seq)
            jax.block_until_ready(self._step(inputs, self._no_tokens, key.bucket))

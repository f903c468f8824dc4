"""The draft model of draft-model speculative decoding, on the runner side (jax).

The draft is a smaller model of the target's vocabulary with its own paged KV cache of the same number of
blocks as the target's, addressed by the same block tables and slots: the scheduler and block manager serve both
caches at once, and a block id means the same tokens in both. Two kinds of work keep it in step with the target:

- ``mirror``: every target step (prefill chunks, decodes, drafts under verification) runs through the draft's
  forward on the very same packed step inputs, writing the draft's K/V into the same slots. So wherever the
  target's cache holds valid K/V (computed tokens, prefix-cache hits, recomputed preempted sequences) the
  draft's does too, and the slots of rejected drafts are overwritten by later steps in both caches alike.
- ``propose``: for the decodes of a speculating step (their 1 + k slots allocated), k one-token decode steps
  of the draft: the first reads the sequence's last token, each next one the previous step's greedy choice,
  still on device (the forward's negative-id placeholders), so the k drafts reach the host with one transfer.

Drafts are the draft's greedy (argmax) tokens: a draft that is a deterministic function of the context has a
one-hot q, for which the runner's verification (sample each row with the plain sampler, accept while equal;
``rejection.py``) is exactly the rejection-sampling rule, so outputs keep the target's distribution, and a
seeded request samples the same tokens as without speculation.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxllm.models.attention import AttentionMetadata
from jaxllm.runner.buckets import Bucket, BucketLadder
from jaxllm.runner.input_batch import StepInputs, dummy_step_inputs, pack_step_inputs
from jaxllm.runner.kv_cache_plan import KVCachePlan
from jaxllm.runner.step import make_forward

logger = logging.getLogger("jaxllm")


def make_draft(args, target_cfg, mesh, ladder: BucketLadder, max_blocks_per_seq: int) -> DraftRunner | None:
    """The DraftRunner of ``args.speculative_config`` with method "draft_model" (loaded through
    ``jaxllm.load.load_draft_model`` onto the target's mesh), else None."""
    from jaxllm.load import load_draft_model
    from jaxllm.spec_decode import SpeculativeConfig

    spec = SpeculativeConfig.from_dict(args.speculative_config)
    if spec is None or spec.method != "draft_model":
        return None
    model, cfg = load_draft_model(args, target_cfg, mesh)
    return DraftRunner(model, cfg, target_cfg, mesh, args, ladder, max_blocks_per_seq)


def _greedy(logits, *, out_rows: int):
    """logits [S, V] -> argmax ids [out_rows] int32 (padded or cut), the next draft step's ``prev_tokens``."""
    ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jnp.pad(ids, (0, max(0, out_rows - ids.shape[0])))[:out_rows]


class DraftRunner:
    """``model``: the draft NNX module on ``mesh``; ``cfg`` / ``target_cfg``: the draft's and the target's
    ModelConfig (ValueError when their vocabularies differ); ``args``: the target's resolved EngineArgs."""

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
        self.kv_caches: list | None = None  # allocate(): the target's number of blocks
        self._forward = make_forward(self.graphdef, self._treedef, mesh)
        self._greedy = jax.jit(_greedy, static_argnames=("out_rows",))
        self._max_seqs = ladder.buckets[-1].num_seqs
        self._no_tokens = jax.device_put(np.zeros(self._max_seqs, np.int32), self._replicated)

    def share_device_memory(self, target_plan: KVCachePlan) -> None:
        """Both caches hold the same number of blocks: when the target's cache was sized to fill the device,
        scale its block count so that the two fit where the target's alone was planned."""
        if target_plan.fills_device:
            tb, db = target_plan.bytes_per_block, self.cache_plan.bytes_per_block
            target_plan.num_blocks = max(1, target_plan.num_blocks * tb // (tb + db))

    def allocate(self, num_blocks: int) -> None:
        """A zeroed draft cache of ``num_blocks`` blocks (the target's count: same block ids)."""
        self.cache_plan.num_blocks = num_blocks
        self.kv_caches = self.cache_plan.allocate()

    @property
    def num_compilations(self) -> int:
        return self._forward._cache_size() + self._greedy._cache_size()

    def mirror(self, dev_inputs, prev_tokens, dims: tuple[int, ...]) -> None:
        """Run a target step's packed inputs (``dims`` = the target forward's (T, S, P[, L])) through the draft:
        its K/V lands in the same slots. Its logits are not used."""
        self.kv_caches, _, _ = self._forward(self.params, self.kv_caches, dev_inputs, prev_tokens, [], dims=dims,
                                             return_hidden=False, attention_impl=None,
                                             logits_sharding=self._replicated)

    def propose(self, items) -> list[tuple[int, ...]]:
        """``items``: [(sequence, n)] with the sequence's last token not yet computed and slots allocated for
        its next 1 + n positions -> n greedy draft tokens per sequence. Runs max(n) one-token draft steps;
        sequences are ordered by n, longest first, so each step's sequences are a prefix of the previous
        step's and keep their row (the placeholder -(row + 1) reads the previous step's choice)."""
        order = sorted(range(len(items)), key=lambda i: -items[i][1])
        seqs = [items[i][0] for i in order]
        counts = [items[i][1] for i in order]
        steps, prev = [], self._no_tokens
        for j in range(counts[0] if counts else 0):
            n = sum(c > j for c in counts)
            bucket = self.ladder.pick(n, n)
            prev = self._decode_step(self._decode_inputs(seqs[:n], j, bucket), prev, bucket)
            steps.append(prev)
        host = np.asarray(jax.device_get(steps)) if steps else np.zeros((0, self._max_seqs), np.int32)
        out: list[tuple[int, ...]] = [()] * len(items)
        for row, (i, c) in enumerate(zip(order, counts)):
            out[i] = tuple(int(t) for t in host[:c, row])
        return out

    def _decode_step(self, inputs: StepInputs, prev, bucket: Bucket):
        """One draft decode step on the device -> its greedy ids [max_num_seqs] (device)."""
        dev = jax.device_put(pack_step_inputs(inputs), self._replicated)
        self.kv_caches, logits, _ = self._forward(
            self.params, self.kv_caches, dev, prev, [],
            dims=(bucket.num_tokens, bucket.num_seqs, self.max_blocks_per_seq), return_hidden=False,
            attention_impl=None, logits_sharding=self._replicated)
        return self._greedy(logits, out_rows=self._max_seqs)

    def _decode_inputs(self, seqs, j: int, bucket: Bucket) -> StepInputs:
        """Draft step ``j`` of ``seqs``: one token each at position len(token_ids) - 1 + j, the sequence's last
        token (j = 0) or the previous step's choice (placeholder -(row + 1)); padded to the bucket."""
        n, bs, T, S = len(seqs), self.block_size, bucket.num_tokens, bucket.num_seqs
        ids = np.zeros(T, np.int32)
        pos = np.zeros(T, np.int32)
        slots = np.full(T, -1, np.int32)
        tables = np.zeros((S, self.max_blocks_per_seq), np.int32)
        lens = np.zeros(S, np.int32)
        for r, seq in enumerate(seqs):
            p = len(seq.token_ids) - 1 + j
            ids[r] = seq.token_ids[-1] if j == 0 else -(r + 1)
            pos[r] = p
            table = seq.block_table
            slots[r] = table[p // bs] * bs + p % bs
            tables[r, :len(table)] = table
            lens[r] = p + 1
        qsl = np.minimum(np.arange(S + 1), n).astype(np.int32)
        logits_indices = np.maximum(qsl[1:] - 1, 0)
        return StepInputs(ids, pos, logits_indices, AttentionMetadata(slots, qsl, lens, tables))

    def warm_up(self, target_dims: list[tuple[int, ...]]) -> None:
        """Compile, by running once on all-padding inputs (nothing is written), the mirror of every target
        forward shape and the draft step of every bucket a proposal can pick."""
        for dims in target_dims:
            packed = pack_step_inputs(dummy_step_inputs(Bucket(*dims[:2]), dims[2], dims[3] if len(dims) > 3 else None))
            self.mirror(jax.device_put(packed, self._replicated), self._no_tokens, dims)
        for bucket in sorted({self.ladder.pick(n, n) for n in range(1, self._max_seqs + 1)},
                             key=lambda b: b.num_tokens):
            jax.block_until_ready(self._decode_step(self._decode_inputs([], 0, bucket), self._no_tokens, bucket))

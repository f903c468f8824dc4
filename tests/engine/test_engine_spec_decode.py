"""Speculative decoding through LLMEngine with a fake runner that verifies drafts: outputs (tokens, finish
reasons, logprobs) equal those without speculation under stops, max_tokens, min_tokens, prefix caching and
preemption, and the paged "cache" stays exact with rejected drafts' slots overwritten later."""

from __future__ import annotations

import engine_fakes
import pytest
from bpe_tokenizer import bpe_tokenizer
from engine_fakes import AsyncCacheCheckingRunner, CacheCheckingRunner, fake_logprob, fake_top

from jaxllm.engine import LLMEngine
from jaxllm.engine.batch import RunnerOutput, TokenLogprobs
from jaxllm.sampling_params import SamplingParams
from jaxllm.spec_decode import NgramProposer, SpeculativeConfig

EOS = 0
SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
REPEAT = [5, 6, 7, 8, 9] * 3  # a script the n-gram proposer predicts after one period


class SpecRunner(CacheCheckingRunner):
    """CacheCheckingRunner that also computes draft tokens: row j of a speculative sequence samples the fake
    model on the context extended by drafts[:j]; it emits rows up to the first mismatch (the acceptance rule)."""

    def _run(self, batch, resolve) -> RunnerOutput:
        bs = self.block_size
        full = {s.seq_id: [resolve(t) for t in s.token_ids[:s.end - len(s.draft_token_ids)]]
                + list(s.draft_token_ids) for s in batch.seqs}
        for s in batch.seqs:
            assert len(s.block_table) * bs >= s.end, "block table too short"
            for pos in range(s.start, s.end):
                self.cache[self.slot(s.block_table, pos)] = (full[s.seq_id][pos], pos)
        out = RunnerOutput(sampled={})
        for s in batch.seqs:
            toks = full[s.seq_id]
            for pos in range(s.end):
                assert self.cache[self.slot(s.block_table, pos)] == (toks[pos], pos), f"seq {s.seq_id} pos {pos}"
            if not s.sample:
                continue
            emitted = []
            for j, row in enumerate(s.sampling_rows()):
                emitted.append(self.next_token(row, toks[:s.end - len(s.draft_token_ids) + j]))
                if j == len(s.draft_token_ids) or emitted[-1] != s.draft_token_ids[j]:
                    break
            lps = [TokenLogprobs(t, fake_logprob(t), 1, fake_top(s.sampling_params.logprobs or 0)) for t in emitted]
            if s.draft_token_ids:
                out.accepted[s.seq_id] = emitted
                out.accepted_logprobs[s.seq_id] = lps
            else:
                out.sampled[s.seq_id] = emitted[0]
                out.logprobs[s.seq_id] = lps[0]
        return out


class AsyncSpecRunner(AsyncCacheCheckingRunner, SpecRunner):
    """With asynchronous scheduling: a speculative sequence never has a placeholder (proposing needs its tokens
    on the host), so the step that speculates is resolved before the next is scheduled."""

    def dispatch(self, batch):
        for s in batch.seqs:
            assert not (s.draft_token_ids and s.token_ids[-1] < 0), "drafts proposed from a placeholder"
        assert self.in_flight == 0 or not any(s.draft_token_ids for s in batch.seqs)
        out = self._run(batch, self._resolve)
        self.prev_sampled = [out.sampled.get(s.seq_id) for s in batch.seqs]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return out


def make(spec, script=None, tokenizer=None, **kw):
    sizes = {"num_blocks": 64, "block_size": 4, "max_num_seqs": 4, "max_num_batched_tokens": 32, "max_model_len": 96}
    sizes.update(kw)
    cls = AsyncSpecRunner if engine_fakes.DEFAULT_ASYNC else SpecRunner
    runner = cls(sizes["num_blocks"], sizes["block_size"], sizes["max_num_seqs"],
                 sizes["max_num_batched_tokens"], script)
    vocab = len(tokenizer) if tokenizer is not None else engine_fakes.VOCAB
    eng = LLMEngine(runner, vocab_size=vocab, eos_token_ids=(EOS,), tokenizer=tokenizer,
                    async_scheduling=engine_fakes.DEFAULT_ASYNC, speculative_config=spec, **sizes)
    return eng, runner


def run_all(eng, requests):
    for i, (prompt, params) in enumerate(requests):
        eng.add_request(str(i), prompt, params)
    outs = {}
    while eng.has_unfinished_requests():
        for o in eng.step():
            outs[o.request_id] = o
    return [[(c.token_ids, c.finish_reason, c.stop_reason, c.text,
              [sorted(lp.items()) for lp in c.logprobs or []]) for c in outs[str(i)].outputs]
            for i in range(len(requests))]


def requests():
    sp = SamplingParams
    p = [10, 11, 12, 13]
    return [
        (p, sp(temperature=0.0, max_tokens=14, ignore_eos=True)),
        ([20, 21, 22], sp(temperature=0.0, max_tokens=30, logprobs=2, ignore_eos=True)),
        ([30, 31], sp(temperature=0.0, max_tokens=30, stop_token_ids=[8], min_tokens=7)),
        ([40, 41, 42], sp(temperature=1.0, seed=3, max_tokens=9, ignore_eos=True)),
        ([50, 51], sp(temperature=0.0, max_tokens=30)),  # scripted EOS after two periods
        ([58, 59, 60, 61, 62], sp(n=2, temperature=0.7, max_tokens=12, ignore_eos=True, seed=11)),
    ]


SCRIPT = {(10, 11, 12, 13): REPEAT, (20, 21, 22): REPEAT * 2, (30, 31): REPEAT * 2,
          (50, 51): REPEAT[:10] + [EOS] + REPEAT}


@pytest.mark.parametrize("kw", [{}, {"num_blocks": 14}, {"enable_prefix_caching": False}],
                         ids=["plenty", "preempting", "no-prefix-cache"])
def test_outputs_equal_without_speculation(kw):
    plain_eng, _ = make(None, SCRIPT, **kw)
    spec_eng, _ = make(SPEC, SCRIPT, **kw)
    want = run_all(plain_eng, requests())
    got = run_all(spec_eng, requests())
    assert got == want
    st = spec_eng.stats
    assert st.spec_decode_num_accepted_tokens > 10  # the scripted repetitions get accepted
    assert st.spec_decode_num_draft_tokens >= st.spec_decode_num_accepted_tokens
    assert sum(st.spec_decode_num_accepted_tokens_per_pos) == st.spec_decode_num_accepted_tokens
    assert st.num_steps < plain_eng.stats.num_steps


def test_stop_strings_truncate_inside_accepted_tokens():
    tok = bpe_tokenizer()
    ids = tok.encode("ab cd ab cd ab cd ab cd ab cd", add_special_tokens=False)
    script = {(1, 2): ids}
    params = SamplingParams(temperature=0.0, max_tokens=len(ids), stop=["cd ab cd ab"], ignore_eos=True)
    want = run_all(make(None, script, tokenizer=tok)[0], [([1, 2], params)])
    eng = make(SPEC, script, tokenizer=tok)[0]
    assert run_all(eng, [([1, 2], params)]) == want
    assert want[0][0][1:4] == ("stop", "cd ab cd ab", "ab ")
    assert eng.stats.spec_decode_num_accepted_tokens > 0


def test_large_batch_turns_speculation_off():
    spec = {**SPEC, "disable_by_batch_size": 1}
    eng, runner = make(spec, SCRIPT)
    reqs = [r for r in requests() if r[1].n == 1][:3]
    assert run_all(eng, reqs) == run_all(make(None, SCRIPT)[0], reqs)
    for step in runner.batches:  # (seq_id, start, n, sample): a speculative decode has n > 1 after the prompt
        assert len(step) == 1 or all(n == 1 or start == 0 for _, start, n, _ in step)


def test_drafts_respect_max_tokens_and_max_model_len():
    eng, runner = make(SPEC, {(10, 11, 12, 13): REPEAT}, max_model_len=16)
    out = run_all(eng, [([10, 11, 12, 13], SamplingParams(temperature=0.0, max_tokens=11, ignore_eos=True))])
    assert out[0][0][0] == REPEAT[:11] and out[0][0][1] == "length"
    assert all(start + n <= 15 for step in runner.batches for _, start, n, _ in step)


def test_ngram_proposer():
    p = NgramProposer(3, 3, 1)
    assert p.propose([1, 2, 3, 4, 1, 2, 3]) == [4, 1, 2]  # the 3-gram [1, 2, 3] matched at 0
    assert p.propose([1, 2, 3, 9, 2, 3, 7, 2, 3]) == [9, 2, 3]  # the earliest match of [2, 3] (vLLM's rule)
    assert NgramProposer(4, 3, 2).propose([1, 2, 3, 4, 2, 3]) == [4, 2, 3]  # vLLM's docstring example
    assert NgramProposer(4, 4, 2).propose([7] * 8) == [7] * 4  # a run of one token: full drafts
    assert NgramProposer(4, 4, 2).propose([5, 6, 7, 7, 7]) == [7]  # the 2-gram [7, 7] at 2: one token after it
    assert p.propose([1, 2, 3, 4, 5]) == []
    assert p.propose([5, 5, 5, 5]) == [5]  # the continuation runs into the end of the context
    assert p.propose([1, 2, 9, 1, 2], max_tokens=1) == [9]
    assert NgramProposer(2, 4, 3).propose([7, 8, 1, 2, 9, 8, 1, 2]) == [9, 8]  # 3-gram [8, 1, 2]
    assert NgramProposer(2, 4, 3).propose([1, 2, 9, 1, 2]) == []  # only a 2-gram matches


def test_speculative_config_validation():
    c = SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 4})
    assert (c.prompt_lookup_max, c.prompt_lookup_min) == (5, 5)
    c = SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3})
    assert (c.prompt_lookup_max, c.prompt_lookup_min) == (3, 3)
    assert SpeculativeConfig.from_dict(None) is None
    for bad, match in [({"method": "eagle", "num_speculative_tokens": 2}, "method='eagle'"),
                       ({"method": "ngram"}, "num_speculative_tokens=None"),
                       ({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 4,
                         "prompt_lookup_max": 2}, "prompt_lookup_min=4"),
                       ({"method": "ngram", "num_speculative_tokens": 2, "bogus": 1}, "bogus")]:
        with pytest.raises(ValueError, match=match):
            SpeculativeConfig.from_dict(bad)
    with pytest.raises(TypeError, match="speculative_config must be a dict"):
        SpeculativeConfig.from_dict("ngram")


# every step speculates (disable_by_batch_size): the automatic rule would stop drafting requests whose padded
# drafts keep failing
DRAFT_SPEC = {"method": "draft_model", "model": "fake-draft", "num_speculative_tokens": 3, "disable_by_batch_size": 4}


class DraftModelRunner(SpecRunner):
    """SpecRunner with ``propose_drafts`` (the scheduler's drafter for method "draft_model"): a fake draft model
    that continues the context as the n-gram proposer would, padded with token 1 to exactly n drafts; it checks
    the scheduler's side of the contract (all tokens on the host, slots allocated for the last token + n)."""

    def propose_drafts(self, items):
        self.proposals = getattr(self, "proposals", 0) + 1
        out = []
        for seq, n in items:
            assert 1 <= n <= 3 and min(seq.token_ids) >= 0, "drafts proposed from a placeholder"
            assert len(seq.block_table) * self.block_size >= len(seq.token_ids) + n, "slots not allocated"
            guess = NgramProposer(3, 3, 1).propose(seq.token_ids, n)
            out.append(tuple(guess + [1] * (n - len(guess))))
        return out


@pytest.mark.parametrize("kw", [{}, {"num_blocks": 14}], ids=["plenty", "preempting"])
def test_draft_model_outputs_equal_without_speculation(kw):
    sizes = {"num_blocks": 64, "block_size": 4, "max_num_seqs": 4, "max_num_batched_tokens": 32,
             "max_model_len": 96, **kw}
    runner = DraftModelRunner(sizes["num_blocks"], sizes["block_size"], sizes["max_num_seqs"],
                              sizes["max_num_batched_tokens"], SCRIPT)
    eng = LLMEngine(runner, vocab_size=engine_fakes.VOCAB, eos_token_ids=(EOS,), speculative_config=DRAFT_SPEC,
                    **sizes)
    assert run_all(eng, requests()) == run_all(make(None, SCRIPT, **kw)[0], requests())
    st = eng.stats
    assert runner.proposals > 5 and st.spec_decode_num_accepted_tokens > 10
    assert st.spec_decode_num_draft_tokens > st.spec_decode_num_accepted_tokens  # the padding gets rejected


def test_draft_model_needs_a_runner_that_proposes():
    runner = SpecRunner(64, 4, 4, 32, SCRIPT)
    with pytest.raises(ValueError, match="draft_model"):
        LLMEngine(runner, vocab_size=engine_fakes.VOCAB, num_blocks=64, block_size=4, max_num_seqs=4,
                  max_num_batched_tokens=32, max_model_len=96, speculative_config=DRAFT_SPEC)


def test_draft_model_config():
    c = SpeculativeConfig.from_dict({"model": "some/draft", "num_speculative_tokens": 2})  # method inferred
    assert (c.method, c.model, c.prompt_lookup_max) == ("draft_model", "some/draft", None)
    assert SpeculativeConfig.from_dict({"model": "[ngram]", "num_speculative_tokens": 2}).method == "ngram"

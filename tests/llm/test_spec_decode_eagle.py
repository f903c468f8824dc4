"""LLM(speculative_config={"method": "eagle", "model": PATH, ...}) with a random EAGLE-1 head for the tiny Llama
target, saved in the test: every proposal equals a torch reference of the head (fc over [embedding of token p + 1,
the target's final hidden state at p], one Llama layer without its input norm, the target's LM head) through
prefill chunks, rejections, prefix-cache hits and preemption; greedy outputs token-identical to no speculation;
sampled drafts keep the target's distribution; strict loading and config validation."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from hf_models import make_config, save_tiny_model
from safetensors.torch import save_file
from test_spec_decode_draft import ALWAYS, KW, PROMPTS, assert_same_frequencies, gen, record_proposals
from test_spec_decode_llm import assert_same_outputs
from transformers import LlamaForCausalLM

from jaxllm import LLM, SamplingParams


def eagle_state(seed: int = 2, hidden: int = 64, vocab: int = 448, fc_scale: float = 0.15):
    """A random EAGLE-1 head's (torch LlamaForCausalLM holding its layer, fc [D, 2D], checkpoint tensors)."""
    torch.manual_seed(seed)
    cfg = make_config("LlamaForCausalLM", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1)
    head = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in head.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    fc = fc_scale * torch.randn(hidden, 2 * hidden)
    tensors = {k[len("model."):]: v.contiguous() for k, v in head.state_dict().items()
               if k.startswith("model.layers.") and "layers.0.input_layernorm" not in k}
    tensors["fc.weight"] = fc
    return head, fc, tensors


def save_eagle(path, tensors, cfg) -> str:
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture(scope="module")
def eagle_dir(tmp_path_factory):
    head, fc, tensors = eagle_state()
    path = save_eagle(tmp_path_factory.mktemp("eagle"), tensors, head.config.to_dict())
    return path, head, fc


def eagle_reference(target, head, fc, context: list[int], k: int, fc_bias=None) -> list[int]:
    """k greedy drafts of the head after ``context`` (torch, no cache: the whole sequence each step)."""
    with torch.no_grad():
        ids = torch.tensor([context])
        feats = target.model(ids).last_hidden_state[0, :-1]  # the target's states at 0..n-2 (after its norm)
        toks = ids[0, 1:]
        head.model.layers[0].input_layernorm = torch.nn.Identity()
        head.model.norm = torch.nn.Identity()
        out = []
        for _ in range(k):
            x = torch.cat([target.model.embed_tokens(toks), feats], -1) @ fc.T
            x = x if fc_bias is None else x + fc_bias
            y = head.model(inputs_embeds=x[None]).last_hidden_state[0]
            d = int(target.lm_head(y[-1]).argmax())
            out.append(d)
            toks, feats = torch.cat([toks, torch.tensor([d])]), torch.cat([feats, y[-1:]])
        return out


def spec(path, k=3):
    return {"method": "eagle", "model": path, "num_speculative_tokens": k, **ALWAYS}


@pytest.fixture(scope="module")
def eagle_llm(llama_dir, eagle_dir):
    return LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec(eagle_dir[0]))


def test_greedy_identical_to_no_speculation(llama_llm, eagle_llm):
    stats = eagle_llm.llm_engine.stats
    drafts = stats.spec_decode_num_draft_tokens
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    want, got = gen(llama_llm, params), gen(eagle_llm, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert stats.spec_decode_num_draft_tokens - drafts > 50


def test_seeded_outputs_with_stops_and_logprobs(llama_llm, eagle_llm):
    """Greedy with stops, min_tokens and logprobs: identical to no speculation; sampled and seeded: the same
    outputs on every run, drafts verified."""
    params = SamplingParams(seed=3, max_tokens=24, temperature=0.0, min_tokens=6, stop_token_ids=[7, 8, 9, 12],
                            logprobs=1)
    assert_same_outputs(gen(llama_llm, params), gen(eagle_llm, params), True)
    stats = eagle_llm.llm_engine.stats
    drafts = stats.spec_decode_num_draft_tokens
    sampled = SamplingParams(seed=3, max_tokens=24, temperature=0.8, top_p=0.9, logprobs=2)
    assert_same_outputs(gen(eagle_llm, sampled), gen(eagle_llm, sampled), True)
    assert stats.spec_decode_num_draft_tokens - drafts > 20


def test_drafts_are_the_heads_greedy_continuation(llama_dir, eagle_dir):
    """The head's cache and the feature store stay right through prefill chunks, rejections, prefix-cache hits
    and preemption (12 blocks for 4 sequences of up to 4 blocks)."""
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, num_gpu_blocks_override=12,
              speculative_config=spec(eagle_dir[0]))
    proposals = record_proposals(llm)
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    gen(llm, params)
    gen(llm, params, [PROMPTS[2] + [1, 2, 3], PROMPTS[2][:17] + [4], PROMPTS[0]])  # prefix-cache hits
    assert llm.llm_engine.scheduler.num_preemptions > 0
    assert llm.llm_engine.scheduler.prefix_cache_hits > 0
    assert len(proposals) > 50
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for context, drafts in proposals:
            want = eagle_reference(llama_dir[1], eagle_dir[1], eagle_dir[2], context, len(drafts))
            assert list(drafts) == want, context
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def near_pair(tmp_path_factory):
    """(plain LLM, EAGLE LLM) of a target whose layers add little to the embedding (o_proj and down_proj scaled
    by 0.1) and a head that passes the embedding of token p + 1 through, scaled (fc = [1000 I, 0], its layer's
    output projections zero): the head's q ranks tokens about as the target's p at the next position, much more
    sharply, so drafts are partly accepted (a wrong rule would favour q's top token)."""
    path = tmp_path_factory.mktemp("near_target")
    target = save_tiny_model(path, "LlamaForCausalLM", seed=3, vocab_size=448, eos_token_id=0, bos_token_id=None)
    with torch.no_grad():
        for name, p in target.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.mul_(0.1)
    target.save_pretrained(path, safe_serialization=True)
    head, _, tensors = eagle_state()
    tensors["fc.weight"] = torch.cat([1000.0 * torch.eye(64), torch.zeros(64, 64)], 1)
    for key in ("layers.0.self_attn.o_proj.weight", "layers.0.mlp.down_proj.weight"):
        tensors[key] = torch.zeros_like(tensors[key])
    eagle = save_eagle(tmp_path_factory.mktemp("near_eagle"), tensors, head.config.to_dict())
    kw = {**KW, "enforce_eager": True, "skip_tokenizer_init": True}
    return LLM(str(path), **kw), LLM(str(path), **kw, speculative_config=spec(eagle, k=2))


def test_sampled_drafts_keep_the_target_distribution(near_pair):
    """n=800 at temperature 1 with top_k=3: drafts drawn from the head's q, partly accepted, partly rejected (then
    the residual draws); the token frequencies at output positions 1 and 2 agree with plain sampling's."""
    params = SamplingParams(temperature=1.0, top_k=3, max_tokens=3, n=800, ignore_eos=True)
    rate = assert_same_frequencies(*near_pair, params, 0.12)
    assert 0.05 < rate < 0.95, rate


def test_missing_unknown_and_misshapen_keys_are_errors(llama_dir, eagle_dir, tmp_path):
    _, _, tensors = eagle_state()
    cfg = json.loads((pathlib.Path(eagle_dir[0]) / "config.json").read_text())
    cases = {"missing": ({k: v for k, v in tensors.items() if k != "fc.weight"}, "missing.*fc.weight"),
             "unknown": ({**tensors, "layers.0.input_layernorm.weight": torch.ones(64)},
                         "unexpected key 'layers.0.input_layernorm.weight'"),
             "shape": ({**tensors, "fc.weight": torch.zeros(64, 64)}, "shape mismatch for 'fc.weight'")}
    for name, (state, match) in cases.items():
        path = save_eagle(tmp_path / name, state, cfg)
        with pytest.raises(ValueError, match=match):
            LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec(path))


def test_model_prefix_fc_bias_and_embedding_copy(llama_dir, eagle_dir, tmp_path):
    """``model.``-prefixed keys load; ``fc.bias`` is added; a checkpoint's ``embed_tokens`` is shape-checked but
    the target's embedding is used (as vLLM does): proposals equal the reference with the bias and the target's
    embedding."""
    _, _, tensors = eagle_state()
    cfg = json.loads((pathlib.Path(eagle_dir[0]) / "config.json").read_text())
    tensors = {"model." + k: v for k, v in tensors.items()}
    bias = 0.5 * torch.randn(64)
    tensors["fc.bias"] = bias
    tensors["embed_tokens.weight"] = torch.randn(448, 64)
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec(save_eagle(tmp_path, tensors,
                                                                                                   cfg)))
    proposals = record_proposals(llm)
    gen(llm, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True), PROMPTS[:2])
    assert len(proposals) > 5
    for context, drafts in proposals:
        assert list(drafts) == eagle_reference(llama_dir[1], eagle_dir[1], eagle_dir[2], context, len(drafts),
                                               bias), context
    with pytest.raises(ValueError, match="shape mismatch for 'embed_tokens.weight'"):
        tensors["embed_tokens.weight"] = torch.randn(448, 32)
        LLM(str(llama_dir[0]), **KW, enforce_eager=True,
            speculative_config=spec(save_eagle(tmp_path / "bad", tensors, cfg)))


@pytest.mark.parametrize("config, match", [
    ({"method": "eagle", "num_speculative_tokens": 2}, "needs 'model'"),
    ({"method": "eagle3", "model": "x", "num_speculative_tokens": 2}, "eagle3"),
    ({"method": "eagle", "model": "x", "num_speculative_tokens": 2, "prompt_lookup_max": 3}, "ngram"),
    ({"method": "eagle", "model": "x", "num_speculative_tokens": 0}, "num_speculative_tokens"),
])
def test_speculative_config_is_validated(llama_dir, config, match):
    with pytest.raises(ValueError, match=match):
        LLM(str(llama_dir[0]), speculative_config=config)


def test_non_llama_target_and_other_hidden_size_are_value_errors(qwen3_dir, llama_dir, eagle_dir, tmp_path):
    with pytest.raises(ValueError, match="Qwen3ForCausalLM"):
        LLM(str(qwen3_dir[0]), **KW, enforce_eager=True, speculative_config=spec(eagle_dir[0]))
    head, _, tensors = eagle_state(hidden=32)
    path = save_eagle(tmp_path, tensors, head.config.to_dict())
    with pytest.raises(ValueError, match="hidden_size"):
        LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec(path))
    path = save_eagle(tmp_path / "hass", eagle_state()[2], {**head.config.to_dict(), "hidden_size": 64,
                                                             "add_para_norm": True})
    with pytest.raises(ValueError, match="add_para_norm"):
        LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec(path))
    nested = {"architectures": ["EAGLEModel"], "model_type": "eagle", "truncated_vocab_size": 100,
              "model": {**head.config.to_dict(), "hidden_size": 64}}
    with pytest.raises(ValueError, match="truncated_vocab_size=100"):
        LLM(str(llama_dir[0]), **KW, enforce_eager=True,
            speculative_config=spec(save_eagle(tmp_path / "nested", eagle_state()[2], nested)))


def test_vllm_nested_eagle_config_loads(llama_llm, llama_dir, eagle_dir, tmp_path):
    """vLLM's EAGLEModel config.json (the head's Llama config under "model") loads the same head."""
    head, _, tensors = eagle_state()
    nested = {"architectures": ["EAGLEModel"], "model_type": "eagle", "model": head.config.to_dict()}
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True,
              speculative_config=spec(save_eagle(tmp_path, tensors, nested)))
    proposals = record_proposals(llm)
    gen(llm, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), PROMPTS[:1])
    assert proposals
    for context, drafts in proposals:
        assert list(drafts) == eagle_reference(llama_dir[1], eagle_dir[1], eagle_dir[2], context, len(drafts))


def test_compiled_at_start_up_without_compilation_during_generate(llama_dir, eagle_dir, llama_llm):
    llm = LLM(str(llama_dir[0]), **KW, speculative_config=spec(eagle_dir[0], k=2))
    runner = llm.llm_engine.runner
    before = runner.num_compilations
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    assert [o.token_ids for o in gen(llm, params)] == [o.token_ids for o in gen(llama_llm, params)]
    gen(llm, SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, logprobs=2, seed=1))
    assert runner.num_compilations == before


def test_sleep_frees_and_restores_the_head_and_its_store(llama_dir, eagle_dir):
    """sleep(level=1/2) frees the head's weights, cache and feature store with the target's; after wake_up
    (level 2: the head read from its checkpoint again) seeded sampled outputs are the same as before."""
    import jax

    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, enable_sleep_mode=True,
              speculative_config=spec(eagle_dir[0]))
    runner, params = llm.llm_engine.runner, SamplingParams(temperature=0.9, seed=5, max_tokens=12)
    ref = [o.token_ids for o in gen(llm, params)]
    live = lambda: sum(a.nbytes for a in jax.live_arrays())
    nbytes = lambda arrays: sum(a.size * a.dtype.itemsize for a in arrays)
    head_bytes = nbytes(runner.draft.params) + nbytes(runner.draft.kv_caches) + runner.draft.store.nbytes
    for level in (1, 2):
        awake = live()
        llm.sleep(level=level)
        assert runner.draft.params is None and not isinstance(runner.draft.store, jax.Array)
        assert awake - live() >= head_bytes + nbytes(runner.param_shapes)
        llm.wake_up()
        assert isinstance(runner.draft.store, jax.Array)
        assert [o.token_ids for o in gen(llm, params)] == ref, level


def test_swap_preemption_and_the_automatic_rule_keep_outputs(llama_llm, llama_dir, eagle_dir):
    """Preemption by swap (the store is not swapped: stale features change drafts only) and the automatic rule
    (the head's cost: a one-layer Llama plus fc) keep greedy outputs identical."""
    auto = {"method": "eagle", "model": eagle_dir[0], "num_speculative_tokens": 2}
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, num_gpu_blocks_override=12, swap_space=0.01,
              preemption_mode="swap", speculative_config=spec(eagle_dir[0]))
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    want = [o.token_ids for o in gen(llama_llm, params)]
    assert [o.token_ids for o in gen(llm, params)] == want
    assert llm.llm_engine.scheduler.num_swap_preemptions > 0
    auto_llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=auto)
    cost = auto_llm.llm_engine.runner.spec_cost.draft
    head = auto_llm.llm_engine.runner.draft.cfg
    assert cost.flops_per_token == 2 * (head.num_params(include_embeddings=False) + head.vocab_size * 64
                                        + 2 * 64 * 64)
    assert [o.token_ids for o in gen(auto_llm, params)] == want


def test_tensor_parallel_head_proposes_the_reference(llama_llm, llama_dir, eagle_dir):
    """tensor_parallel_size=2: the head's weights and cache sharded by the rules table, the store replicated;
    greedy outputs identical and proposals the reference's."""
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, tensor_parallel_size=2,
              speculative_config=spec(eagle_dir[0]))
    proposals = record_proposals(llm)
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    assert [o.token_ids for o in gen(llm, params)] == [o.token_ids for o in gen(llama_llm, params)]
    assert len(proposals) > 10
    for context, drafts in proposals[::3]:
        assert list(drafts) == eagle_reference(llama_dir[1], eagle_dir[1], eagle_dir[2], context, len(drafts))


def test_kv_cache_memory_bytes_holds_the_caches_and_the_store(llama_dir, eagle_dir):
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, kv_cache_memory_bytes=2**20,
              speculative_config=spec(eagle_dir[0], k=2))
    runner = llm.llm_engine.runner
    head = runner.draft
    assert head.bytes_per_block == head.cache_plan.bytes_per_block + 16 * 64 * 4  # block_size 16, D 64, float32
    per_block = runner.cache_plan.bytes_per_block + head.bytes_per_block
    assert runner.num_blocks == (2**20 // runner.cache_plan.bytes_per_block) * runner.cache_plan.bytes_per_block \
        // per_block
    assert head.store.shape == (runner.num_blocks * 16, 64)


def test_tied_target_shares_its_embedding_as_the_head(eagle_dir, tmp_path):
    """A target with tied embeddings (no lm_head parameter): the head projects with the embedding."""
    target = save_tiny_model(tmp_path, "LlamaForCausalLM", seed=4, vocab_size=448, tie_word_embeddings=True,
                             eos_token_id=0, bos_token_id=None)
    llm = LLM(str(tmp_path), **KW, enforce_eager=True, skip_tokenizer_init=True,
              speculative_config=spec(eagle_dir[0]))
    proposals = record_proposals(llm)
    gen(llm, SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True), PROMPTS[:2])
    assert len(proposals) > 5
    for context, drafts in proposals:
        assert list(drafts) == eagle_reference(target, eagle_dir[1], eagle_dir[2], context, len(drafts))


def test_data_parallel_replicas_each_have_a_head(llama_llm, llama_dir, eagle_dir):
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, data_parallel_size=2,
              speculative_config=spec(eagle_dir[0]))
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    assert [o.token_ids for o in gen(llm, params)] == [o.token_ids for o in gen(llama_llm, params)]
    assert llm.llm_engine.stats.spec_decode_num_draft_tokens > 20

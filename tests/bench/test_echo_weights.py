"""Echo weights (jaxllm/bench/echo_weights.py) on a tiny random Llama (load_format="dummy", as the bench): the
served parameters keep their names, shapes, dtypes and shardings; greedy outputs repeat the prompt's last
token; n-gram and draft-model speculation then accept nearly every draft; the bench records it."""

from __future__ import annotations

import json
import types

import jax
import numpy as np
import pytest

from jaxllm import LLM, SamplingParams
from jaxllm.bench.echo_weights import BRANCH_SCALE, apply_echo, check_supported, echo_fraction
from jaxllm.runner.weight_updates import param_name

VOCAB = 512
TARGET = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB, "hidden_size": 64,
          "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 256, "tie_word_embeddings": False}
DRAFT = {**TARGET, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 1, "tie_word_embeddings": True}
KW = {"load_format": "dummy", "skip_tokenizer_init": True, "max_num_seqs": 4, "max_num_batched_tokens": 64,
      "max_model_len": 128}
ALWAYS = {"disable_by_batch_size": 4}  # every step speculates (the automatic rule would not on a tiny CPU model)
GREEDY = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
PROMPTS = [np.random.default_rng(i).integers(0, VOCAB, 12).tolist() for i in range(3)]


def write(path, cfg: dict) -> str:
    path.mkdir()
    (path / "config.json").write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("echo")
    return write(root / "target", TARGET), write(root / "draft", DRAFT)


def generate(llm, prompts=PROMPTS):
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], GREEDY, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def served(runner) -> dict:
    return {param_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(runner.served_weights())[0]}


def test_echo_weights_keep_every_shape_and_the_model_echoes(dirs):
    llm = LLM(dirs[0], **KW)
    runner = llm.llm_engine.runner
    before = {k: (x.shape, x.dtype, x.sharding, np.asarray(x)) for k, x in served(runner).items()}
    compiled = runner.num_compilations
    assert generate(llm) != [[p[-1]] * 40 for p in PROMPTS]  # random weights do not echo
    assert apply_echo(llm) == 0  # every new array made in place: no copy onto the served sharding
    after = served(runner)
    assert list(after) == list(before)
    for k, x in after.items():
        assert (x.shape, x.dtype, x.sharding) == before[k][:3], k
    for k in ("layers/0/self_attn/o_proj", "layers/1/mlp/down"):
        np.testing.assert_allclose(np.asarray(after[k]), before[k][3] * BRANCH_SCALE, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(after["lm_head"]), np.asarray(after["embed"]))
    norms = np.linalg.norm(np.asarray(after["embed"]), axis=-1)
    np.testing.assert_allclose(norms, norms.mean(), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(after["layers/0/self_attn/q_proj"]), before["layers/0/self_attn/q_proj"][3])
    outputs = generate(llm)
    assert outputs == [[p[-1]] * 40 for p in PROMPTS]
    assert echo_fraction(PROMPTS, outputs) == 1.0
    assert runner.num_compilations == compiled  # same shapes: the compiled programs serve them


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_speculation_accepts_nearly_every_draft(dirs, method):
    spec = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
    if method == "draft_model":
        spec = {"method": "draft_model", "model": dirs[1], "num_speculative_tokens": 4}
    llm = LLM(dirs[0], **KW, speculative_config={**spec, **ALWAYS})
    assert apply_echo(llm) == 0
    stats = llm.llm_engine.stats
    draft = llm.llm_engine.runner.draft
    calls = {"propose": 0, "forward": 0}
    if draft is not None:  # count the draft's forwards per proposal
        def counted(name, fn):
            def call(*args):
                calls[name] += 1
                return fn(*args)
            return call
        draft.propose, draft._run = counted("propose", draft.propose), counted("forward", draft._run)
    assert generate(llm) == [[p[-1]] * 40 for p in PROMPTS]
    drafted, accepted = stats.spec_decode_num_draft_tokens, stats.spec_decode_num_accepted_tokens
    assert drafted >= 60 and accepted >= 0.95 * drafted  # 3 x 40 tokens: most of them drafted and accepted
    if method == "draft_model":
        assert accepted == drafted  # the echoing draft proposes the target's token every time
        # k forwards per proposal: the last accepted draft's K/V is written by the first draft step (one
        # catch-up forward for the prompts)
        assert calls["forward"] <= 4 * calls["propose"] + 1


def test_sharded_replicas_echo_in_place(dirs):
    """tensor_parallel_size=2 x data_parallel_size=2 on four CPU devices: every replica's target and draft
    echo, each new array made on its served sharding (none moved)."""
    spec = {"method": "draft_model", "model": dirs[1], "num_speculative_tokens": 4, **ALWAYS}
    llm = LLM(dirs[0], **KW, tensor_parallel_size=2, data_parallel_size=2, speculative_config=spec,
              enforce_eager=True)  # only the programs the run uses are compiled
    assert len(llm.llm_engine.runners) == 2
    assert apply_echo(llm) == 0
    assert generate(llm, PROMPTS * 2) == [[p[-1]] * 40 for p in PROMPTS * 2]
    stats = llm.llm_engine.stats
    assert stats.spec_decode_num_accepted_tokens == stats.spec_decode_num_draft_tokens > 0


def test_unsupported_models_and_bench_flags_are_errors(tmp_path):
    with pytest.raises(ValueError, match="quantization='fp8'"):
        check_supported(types.SimpleNamespace(quantization="fp8", norm_placement="pre"))
    with pytest.raises(ValueError, match="norm_placement='sandwich'"):
        check_supported(types.SimpleNamespace(quantization=None, norm_placement="sandwich"))
    from jaxllm.bench.command_line import parse_args

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TARGET))
    with pytest.raises(SystemExit):
        parse_args(["--config", str(cfg), "--echo-weights", "--quantization", "int8"])


def test_bench_records_echo_and_acceptance(tmp_path):
    from jaxllm.bench.main import main
    from jaxllm.bench.presets import PRESETS

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TARGET))
    spec = json.dumps({"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4,
                       "prompt_lookup_min": 2, "disable_by_batch_size": 2})
    ours = main(["--config", str(cfg), "--num-requests", "2", "--prompt-len", "8", "8", "--output-len", "24", "24",
                 "--max-num-seqs", "2", "--max-num-batched-tokens", "32", "--echo-weights",
                 "--speculative-config", spec])["jaxllm"]
    assert ours["echo_weights"] and ours["echo_fraction"] == 1.0
    assert ours["spec_decode_acceptance_rate"] >= 0.9 and ours["spec_decode_tokens_per_verifying_step"] > 2
    assert ours["spec_decode_num_draft_tokens"] >= ours["spec_decode_num_accepted_tokens"] > 20
    for name, preset in PRESETS.items():
        if "-echo" in name:
            assert "--echo-weights" in preset.args
            assert (preset.baseline is None) == ("--speculative-config" not in preset.args), name
            if preset.baseline:  # the same run without speculation
                base = PRESETS[preset.baseline].args
                assert preset.args[:len(base)] == base and "--speculative-config" not in base, name


def test_summary_table_of_speculative_runs(tmp_path):
    from test_bench_report import fake_result

    from jaxllm.bench.report import summarize

    d = tmp_path / "throughput"
    d.mkdir()
    base = fake_result("spec-b1-echo", 170.0)
    base["jaxllm"]["echo_fraction"] = 1.0
    spec = fake_result("spec-b1-echo-ngram", 510.0, baseline={"preset": "spec-b1-echo", "output_tok_s": 170.0})
    spec["jaxllm"].update(speculative_config={"method": "ngram"}, spec_decode_acceptance_rate=0.98,
                          spec_decode_tokens_per_verifying_step=4.9, spec_decode_num_drafts=52, steps=60,
                          echo_fraction=1.0)
    for r in (base, spec):
        (d / f"{r['preset']}.json").write_text(json.dumps(r))
    text = summarize(str(tmp_path))
    assert "## Speculative decoding" in text
    assert "| `spec-b1-echo-ngram` | NVIDIA H200 | 98.0% | 4.90 | 52 / 60 | 100.0% | 3.00x spec-b1-echo |" in text
    assert "| `spec-b1-echo` | NVIDIA H200 | -" not in text  # no speculation: not in that table

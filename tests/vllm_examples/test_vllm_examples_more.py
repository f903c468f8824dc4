"""More of vLLM's offline examples, run through ``main()`` (conftest.py's harness)."""

from __future__ import annotations

import os
import re

import pytest
from examples_harness import SMALL
from hf_models import save_tiny_model, save_tokenizer_with_template

from jaxllm import SamplingParams


def test_reproducibility(run_example):
    (outputs, printed) = run_example("reproducibility.py")
    texts = [out.outputs[0].text for out in outputs]
    assert all(texts) and printed.count("Generated text:") == 4
    # the same seed on a new engine: the same sampled texts
    import jaxllm.llm

    again = jaxllm.llm.LLM("HuggingFaceTB/SmolLM2-135M-Instruct", seed=42, enforce_eager=True, max_num_seqs=4,
                           max_num_batched_tokens=128, max_model_len=512)
    params = SamplingParams(temperature=0.8, top_p=0.95)
    prompts = [out.prompt for out in outputs]
    assert [o.outputs[0].text for o in again.generate(prompts, params, use_tqdm=False)] == texts


def test_automatic_prefix_caching(run_example):
    (first, second), printed = run_example("automatic_prefix_caching.py")
    assert printed.count("Generation time:") == 2
    shared = len(first[0].prompt_token_ids) // 16 * 16
    assert second[0].num_cached_tokens >= shared - 32 > 0  # the table's blocks come from the cache
    assert first[0].outputs[0].text and second[0].outputs[0].text


def test_simple_profiling(run_example):
    profile_dir, printed = run_example("simple_profiling.py")
    assert printed.count("Generated text:") == 4
    files = [f for _, _, names in os.walk(profile_dir) for f in names]
    assert any(f.endswith(".xplane.pb") for f in files), files


def test_context_extension(run_example, alias_model, tmp_path):
    save_tiny_model(tmp_path, "Qwen3ForCausalLM", head_dim=16, vocab_size=448)  # the tokenizer's 421
    save_tokenizer_with_template(tmp_path)
    alias_model("Qwen/Qwen3-0.6B", tmp_path)
    (llm, outputs), printed = run_example("context_extension.py")
    assert printed.count("Generated text:") == 1 and outputs[0].outputs[0].token_ids
    rope = llm.llm_engine.model_config.rope  # hf_overrides' rope_parameters: YaRN over the checkpoint's rope
    assert (rope.theta, rope.rope_type, dict(rope.scaling)) == (
        1e6, "yarn", {"factor": 4.0, "original_max_position_embeddings": 32768})
    assert re.search(r"You are a helpful assistant", outputs[0].prompt)


def test_multilora_inference(monkeypatch, tmp_path, capsys):
    import runpy

    from lora_adapters import save_peft_adapter

    import jaxllm

    base, adapter = tmp_path / "base", tmp_path / "sql_lora"
    save_tiny_model(base, "LlamaForCausalLM", vocab_size=32064)  # the script stops on token 32003
    save_tokenizer_with_template(base)
    save_peft_adapter(base, adapter, r=8, alpha=16, targets=["q_proj", "v_proj"])

    engine_args = jaxllm.EngineArgs

    def small_engine_args(**kwargs):  # the harness's shapes; the script's own keywords win
        return engine_args(**{**SMALL, "max_num_batched_tokens": 256, **kwargs, "model": str(base)})

    monkeypatch.setattr(jaxllm, "EngineArgs", small_engine_args)
    namespace = runpy.run_path(os.path.join(os.path.dirname(__file__), "multilora_inference.py"))
    finished = namespace["main"](str(adapter))
    assert sorted(out.request_id for out in finished) == ["0", "1", "2", "3"]
    by_id = {out.request_id: out for out in finished}
    assert by_id["2"].lora_request.lora_name == "sql-lora" and by_id["3"].lora_request.lora_name == "sql-lora2"
    assert by_id["2"].outputs[0].token_ids == by_id["3"].outputs[0].token_ids  # the same adapter, greedy
    assert capsys.readouterr().out.count("RequestOutput(") == 4


def test_unbuilt_features_of_examples_fail_clearly(run_example):
    """The logits_processor examples and load_sharded_state.py: a ValueError naming the feature."""
    import numpy as np

    import jaxllm.llm

    with pytest.raises(ValueError, match="logits_processors"):
        jaxllm.llm.LLM("HuggingFaceTB/SmolLM2-135M-Instruct", logits_processors=[object])
    with pytest.raises(ValueError, match="load_format"):  # load_sharded_state.py (jaxllm convert writes Orbax)
        jaxllm.llm.LLM("HuggingFaceTB/SmolLM2-135M-Instruct", load_format="sharded_state")
    llm = jaxllm.LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct")  # the harness's (cached) engine
    with pytest.raises(ValueError, match="enable_prompt_embeds"):  # an engine built without the option
        llm.generate({"prompt_embeds": np.zeros((3, 576), np.float32)})


def test_prompt_embed_inference(run_example, tmp_path):
    import runpy

    save_tiny_model(tmp_path, "LlamaForCausalLM", vocab_size=448)
    save_tokenizer_with_template(tmp_path)
    namespace = runpy.run_path(os.path.join(os.path.dirname(__file__), "prompt_embed_inference.py"))
    llm, tokenizer, single, batch = namespace["main"](str(tmp_path))
    assert len(single) == 1 and len(batch) == 3 and all(o.outputs[0].token_ids for o in single + batch)
    # the embeddings of the chat's tokens give what its token ids give (greedy)
    chat = [{"role": "user", "content": "Please tell me about the capital of France."}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    greedy = SamplingParams(temperature=0, max_tokens=8)
    import transformers

    layer = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).get_input_embeddings()
    by_embeds = llm.generate({"prompt_embeds": namespace["get_prompt_embeds"](chat, tokenizer, layer)}, greedy,
                             use_tqdm=False)
    by_ids = llm.generate({"prompt_token_ids": list(ids)}, greedy, use_tqdm=False)
    assert by_embeds[0].outputs[0].token_ids == by_ids[0].outputs[0].token_ids


def test_structured_outputs(run_example):
    pytest.importorskip("llguidance")
    (choice, regex, json_text, grammar), printed = run_example("structured_outputs.py")
    assert choice in ("Positive", "Negative")
    # max_tokens=16 (the default) may stop each one early: what came is a prefix of a match
    assert re.fullmatch(r"\w+(@(\w+(\.(c(om?)?)?)?)?)?", regex)  # "\n" is the stop string, left out
    assert json_text.startswith("{")
    matches = [f"SELECT {a} from {t} where {c}= {n}" for a in ("col_1 ", "col_2 ") for t in ("table_1 ", "table_2 ")
               for c in ("col_1 ", "col_2 ") for n in ("1 ", "2 ")]
    assert grammar and any(m.startswith(grammar) for m in matches), grammar
    assert printed.count("Structured outputs by") == 4


def test_skip_loading_weights_in_engine_init(run_example, alias_model, tmp_path):
    import jax

    import jaxllm.llm

    save_tiny_model(tmp_path, "LlamaForCausalLM", vocab_size=448, num_key_value_heads=4)  # 4 heads: tp=4
    save_tokenizer_with_template(tmp_path)
    alias_model("facebook/opt-13b", tmp_path)
    llm, printed = run_example("skip_loading_weights_in_engine_init.py")
    assert printed.count("Output:") == 8
    real = jaxllm.llm.LLM(str(tmp_path), tensor_parallel_size=4, enforce_eager=True, max_num_seqs=4,
                          max_num_batched_tokens=128, max_model_len=512)
    for ours, ref in zip(jax.tree.leaves(llm.get_weights()), jax.tree.leaves(real.get_weights())):
        assert (jax.device_get(ours) == jax.device_get(ref)).all()  # the checkpoint's weights, read again
    greedy = SamplingParams(temperature=0, max_tokens=8)
    prompt = ["The capital of France is " * 4]  # whole blocks: a prefix-cache hit would show stale KV
    assert llm.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids == \
        real.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids

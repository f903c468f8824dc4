"""Malformed config.json files: each a ValueError naming the file and the key, before anything is sized or
loaded from it (a zero head count, a negative length or a million layers never reach the model code)."""

from __future__ import annotations

import json
import time

import pytest
from hf_models import save_tiny_model

import jaxllm
from jaxllm.model_source import model_config


@pytest.fixture
def checkpoint(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    return tmp_path


def _edit(path, edit):
    cfg_path = path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    edit(cfg)
    cfg_path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("key,value", [
    ("num_attention_heads", 0), ("num_attention_heads", -2), ("hidden_size", "64"), ("vocab_size", 1.5),
    ("num_hidden_layers", 10**6), ("num_hidden_layers", True), ("max_position_embeddings", -5),
    ("num_key_value_heads", 3), ("head_dim", 0),
])
def test_bad_size_field(checkpoint, key, value):
    _edit(checkpoint, lambda c: c.__setitem__(key, value))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=key) as err:
        model_config(str(checkpoint))
    assert "config.json" in str(err.value)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("key,value", [
    ("architectures", "LlamaForCausalLM"), ("architectures", [1]), ("architectures", {"a": 1}),
    ("rms_norm_eps", -1.0), ("rms_norm_eps", "tiny"), ("rms_norm_eps", None), ("rope_theta", float("inf")), ("tie_word_embeddings", "yes"),
    ("eos_token_id", "a"), ("eos_token_id", [2, -1]), ("rope_parameters", "x"), ("rope_scaling", [1]),
    ("quantization_config", "fp8"), ("qkv_bias", "false"), ("use_bias", 0), ("use_qk_norm", "yes"),
])
def test_field_of_the_wrong_kind(checkpoint, key, value):
    """Not Python's AttributeError / TypeError, nor a negative epsilon that makes every logit NaN."""
    _edit(checkpoint, lambda c: c.__setitem__(key, value))
    with pytest.raises(ValueError, match=key) as err:
        model_config(str(checkpoint))
    assert "config.json" in str(err.value)


def test_a_model_too_large_for_memory_is_refused_from_its_config_at_once(checkpoint):
    """Thousands of wide layers: the weights' lower bound from config.json fails the plan before the abstract
    model (minutes of eval_shape) is built."""
    _edit(checkpoint, lambda c: c.update(num_hidden_layers=4096, hidden_size=8192, intermediate_size=28672,
                                         num_attention_heads=64, num_key_value_heads=8, head_dim=128))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="weights need"):
        jaxllm.LLM(str(checkpoint), skip_tokenizer_init=True, enforce_eager=True, load_format="dummy")
    assert time.perf_counter() - t0 < 10


def test_more_layers_than_the_checkpoint_holds_is_refused_from_its_headers(checkpoint):
    """A plausible but wrong layer count (the checkpoint has 2): refused before the model of 4000 layers is
    built, naming the count."""
    _edit(checkpoint, lambda c: c.update(num_hidden_layers=4000))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="num_hidden_layers=4000 but the checkpoint's tensors stop at layer 1"):
        jaxllm.LLM(str(checkpoint), skip_tokenizer_init=True, enforce_eager=True)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("key", ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"])
def test_missing_required_field(checkpoint, key):
    _edit(checkpoint, lambda c: c.pop(key))
    with pytest.raises(ValueError, match=f"no '{key}'"):
        model_config(str(checkpoint))


@pytest.mark.parametrize("text", ["{not json", "[1, 2, 3]", "\udcff".encode("utf-8", "surrogatepass").decode("latin-1")])
def test_not_a_json_object(checkpoint, text):
    (checkpoint / "config.json").write_text(text)
    with pytest.raises(ValueError, match="config.json"):
        model_config(str(checkpoint))


def test_wrong_kind_of_field_names_the_file(checkpoint):
    _edit(checkpoint, lambda c: c.__setitem__("rope_scaling", "fast"))
    with pytest.raises(ValueError, match="config.json"):
        model_config(str(checkpoint))


def test_llm_reports_it_before_loading(checkpoint):
    _edit(checkpoint, lambda c: c.__setitem__("num_attention_heads", 0))
    with pytest.raises(ValueError, match="num_attention_heads=0"):
        jaxllm.LLM(str(checkpoint))


def test_weights_that_cannot_fit_are_refused_before_loading(checkpoint):
    _edit(checkpoint, lambda c: c.update(hidden_size=2**20, intermediate_size=2**22, head_dim=16,
                                         num_attention_heads=4, num_key_value_heads=2))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="weights need"):
        jaxllm.load_model(str(checkpoint), load_format="dummy")
    assert time.perf_counter() - t0 < 10


def test_kv_cache_that_cannot_fit_is_refused(checkpoint):
    with pytest.raises(ValueError, match="num_gpu_blocks_override"):
        jaxllm.LLM(str(checkpoint), num_gpu_blocks_override=10**12, enforce_eager=True, skip_tokenizer_init=True)


def test_max_model_len_above_the_models_context(checkpoint):
    with pytest.raises(ValueError, match=r"max_model_len=100000 is greater than the model's context \(512"):
        jaxllm.LLM(str(checkpoint), max_model_len=100000, skip_tokenizer_init=True, enforce_eager=True)
    llm = jaxllm.LLM(str(checkpoint), max_model_len=1024, allow_long_max_model_len=True, skip_tokenizer_init=True,
                     enforce_eager=True, max_num_seqs=2, max_num_batched_tokens=32)
    assert llm.engine_args.max_model_len == 1024


@pytest.mark.parametrize("scaling", [{"rope_type": "linear"}, {"rope_type": "dynamic", "factor": "2"},
                                     {"type": "llama3", "factor": -1.0}])
def test_rope_scaling_without_a_usable_factor(checkpoint, scaling):
    def edit(c):
        c.pop("rope_parameters", None)
        c.update(rope_scaling=scaling)

    _edit(checkpoint, edit)
    with pytest.raises(ValueError, match="config.json: .* rope scaling needs a positive 'factor'"):
        model_config(str(checkpoint))


def test_derived_context_counts_linear_rope_scaling(checkpoint):
    from jaxllm.engine_args import derived_max_model_len

    def linear(c):
        c.pop("rope_parameters", None)  # transformers 5 writes the rope settings here; 4.x reads rope_scaling
        c.update(rope_scaling={"rope_type": "linear", "factor": 4.0})

    _edit(checkpoint, linear)
    assert derived_max_model_len(model_config(str(checkpoint))) == 2048

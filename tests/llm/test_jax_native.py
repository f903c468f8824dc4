"""Serving what you train: LLM(model=<NNX module>), get_weights / update_weights without recompilation (also
resharded and cast on the device, and after sleep(level=2)), model_from_params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxllm
from jaxllm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
PROMPTS = [{"prompt_token_ids": [5, 17, 33, 2]}, {"prompt_token_ids": [40, 41, 42]}]
KW = {"max_num_seqs": 4, "max_num_batched_tokens": 32, "max_model_len": 128}


def _tokens(llm):
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]


@pytest.fixture(scope="module")
def trained(llama_dir):
    """A module from load_model and the same served from its folder (the reference outputs)."""
    path = str(llama_dir[0])
    ref = LLM(path, **KW, enforce_eager=True)
    return jaxllm.load_model(path), path, _tokens(ref)


def test_in_memory_module_serves_like_its_checkpoint(trained):
    module, path, expected = trained
    llm = LLM(module, tokenizer=path, **KW)
    assert _tokens(llm) == expected
    assert llm.generate("hello", GREEDY, use_tqdm=False)[0].outputs[0].text is not None
    with pytest.raises(ValueError, match="pass tokenizer="):
        LLM(module, **KW)
    with pytest.raises(ValueError, match="quantization='int8' does not apply"):
        LLM(module, tokenizer=path, quantization="int8", **KW)


def test_update_weights_changes_outputs_without_recompiling(trained):
    module, path, expected = trained
    llm = LLM(module, tokenizer=path, enable_sleep_mode=True, **KW)
    runner = llm.llm_engine.runner
    compiled = runner.num_compilations
    weights = llm.get_weights()
    assert isinstance(weights, nnx.State)
    noisy = jax.tree_util.tree_map(lambda x: x + 0.05 * jnp.sign(jnp.sin(jnp.arange(x.size).reshape(x.shape) + 1.0))
                                   .astype(x.dtype), weights)
    llm.update_weights(noisy)
    changed = _tokens(llm)
    assert changed != expected
    llm.update_weights(nnx.to_pure_dict(weights))  # the original values again, as a pure dict of arrays
    assert _tokens(llm) == expected
    # float64 host arrays: moved to the device and cast to the served dtype
    llm.update_weights(jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), noisy))
    assert _tokens(llm) == changed
    # after sleep(level=2) the weights are gone; update_weights brings new ones, wake_up the cache
    llm.sleep(level=2)
    llm.update_weights(weights)
    llm.wake_up()
    assert _tokens(llm) == expected
    assert runner.num_compilations == compiled


def test_update_weights_errors(trained):
    module, path, _ = trained
    llm = LLM(module, tokenizer=path, **KW, enforce_eager=True)
    pure = nnx.to_pure_dict(llm.get_weights())
    pure["embed"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="embed has shape"):
        llm.update_weights(pure)
    pure = nnx.to_pure_dict(llm.get_weights())
    pure["bogus"] = np.zeros(3)
    with pytest.raises(ValueError, match="bogus"):
        llm.update_weights(pure)
    pure = nnx.to_pure_dict(llm.get_weights())
    del pure["norm"]
    with pytest.raises(ValueError, match="norm"):
        llm.update_weights(pure)


def test_update_weights_reshards_on_the_device(trained):
    module, path, expected = trained
    llm = LLM(module, tokenizer=path, tensor_parallel_size=2, **KW, enforce_eager=True)
    one_device = jax.tree_util.tree_map(lambda x: jax.device_put(x, jax.devices()[3]), llm.get_weights())
    llm.update_weights(one_device)
    served = jax.tree_util.tree_leaves(llm.get_weights())
    assert all(len(x.sharding.device_set) == 2 for x in served)
    assert _tokens(llm) == expected


def test_model_from_params(trained):
    module, _, _ = trained
    ids = jnp.array([[3, 4, 5, 6]], jnp.int32)
    rebuilt = jaxllm.model_from_params(module.config, nnx.to_pure_dict(nnx.state(module)), tensor_parallel_size=4)
    np.testing.assert_allclose(np.asarray(rebuilt(ids)), np.asarray(module(ids)), rtol=1e-5, atol=1e-5)

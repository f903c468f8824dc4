"""The host work of a step does not grow with the device count: per step one forward program launch (greedy
steps take the forward's argmax; a sampler program only for other sampling) and no Python ``jax.device_put``
(the step's packed host arrays go to the compiled programs, whose C++ dispatch copies them), at TP=1 as at TP=4
on fake CPU devices. And the forward's greedy tokens are the sampler program's."""

from __future__ import annotations

import jax
import pytest
from hf_models import save_tiny_model

from jaxllm import LLM, SamplingParams
from jaxllm.runner.programs import ForwardKey

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")

PROMPTS = [{"prompt_token_ids": [(5 * i + j) % 200 + 3 for j in range(4 + 3 * i)]} for i in range(3)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_tiny_model(path, "LlamaForCausalLM")
    return path


def _count_step_host_work(llm, params, monkeypatch) -> tuple[dict, list]:
    """Per step: forward and sampler program launches and ``jax.device_put`` calls during ``generate``."""
    runner = llm.llm_engine.runner
    llm.generate(PROMPTS, params, use_tqdm=False)  # compiles what the counted run uses
    counts = {"forward": 0, "sampler": 0, "device_put": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return call

    get = runner.programs.get
    monkeypatch.setattr(runner.programs, "get",
                        lambda key: counted("forward" if isinstance(key, ForwardKey) else "sampler", get(key)))
    monkeypatch.setattr(jax, "device_put", counted("device_put", jax.device_put))
    steps0 = runner.num_steps
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    monkeypatch.undo()
    steps = runner.num_steps - steps0
    return {k: v / steps for k, v in counts.items()}, [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("tp", [1, 4])
def test_step_host_work_is_constant_in_the_device_count(llama_dir, tp, monkeypatch):
    llm = LLM(str(llama_dir), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
              enforce_eager=True, tensor_parallel_size=tp)
    greedy = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, detokenize=False)
    per_step, greedy_tokens = _count_step_host_work(llm, greedy, monkeypatch)
    assert per_step == {"forward": 1, "sampler": 0, "device_put": 0}
    # greedy rows under a sampler variant that needs its program (logprobs): the same tokens
    logprobs = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, detokenize=False, logprobs=1)
    per_step, sampler_tokens = _count_step_host_work(llm, logprobs, monkeypatch)
    assert per_step == {"forward": 1, "sampler": 1, "device_put": 0}
    assert sampler_tokens == greedy_tokens

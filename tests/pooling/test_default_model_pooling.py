"""vLLM's offline pooling examples (examples/offline_inference/basic/embed.py and score.py) on the embedded
default model (a LlamaForCausalLM checkpoint: runner="pooling" makes it a last-token embedder)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxllm import DEFAULT_MODEL, LLM

PROMPTS = ["Hello, my name is", "The president of the United States is", "The capital of France is",
           "The future of AI is"]


@pytest.fixture(scope="module")
def llm():
    return LLM(model=DEFAULT_MODEL, runner="pooling", enforce_eager=True, max_num_seqs=4,
               max_num_batched_tokens=64, max_model_len=256)


def test_embed_example(llm):
    outputs = llm.embed(PROMPTS)
    assert len(outputs) == 4
    for prompt, output in zip(PROMPTS, outputs):
        embeds = output.outputs.embedding
        assert len(embeds) == llm.model_config.hidden_size
        assert np.linalg.norm(embeds) == pytest.approx(1.0, abs=1e-4)
        assert output.prompt_token_ids == llm.get_tokenizer()(prompt).input_ids


def test_score_example(llm):
    text_1 = "What is the capital of France?"
    texts_2 = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]
    outputs = llm.score(text_1, texts_2)
    e = np.array([o.outputs.embedding for o in llm.embed([text_1, *texts_2], use_tqdm=False)])
    for out, doc in zip(outputs, e[1:]):
        assert out.outputs.score == pytest.approx(float(e[0] @ doc), abs=1e-4)

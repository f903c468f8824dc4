"""vLLM's ``cache_salt`` in pooling prompts: LAST pooling reads the prefix cache only within one salt."""

from __future__ import annotations

import numpy as np
import pytest

TEXT = "The quick brown fox jumps over the lazy dog. " * 3


def _embed(llm, prompt):
    engine = llm.llm_engine
    before = engine.stats.num_cached_tokens
    out = llm.embed(prompt, use_tqdm=False)[0].outputs.embedding
    return engine.stats.num_cached_tokens - before, out


def test_pooling_prompts_share_blocks_within_one_salt(embedder_llm):
    embedder_llm.reset_prefix_cache()
    hits, first = _embed(embedder_llm, {"prompt": TEXT, "cache_salt": "a"})
    assert hits == 0
    hits, other = _embed(embedder_llm, {"prompt": TEXT, "cache_salt": "b"})
    assert hits == 0
    np.testing.assert_allclose(other, first, atol=1e-5)
    hits, _ = _embed(embedder_llm, TEXT)  # unsalted: its own chain
    assert hits == 0
    hits, again = _embed(embedder_llm, {"prompt": TEXT, "cache_salt": "a"})
    assert hits > 0
    np.testing.assert_allclose(again, first, atol=1e-5)
    with pytest.raises(TypeError, match="cache_salt must be a str"):
        embedder_llm.embed({"prompt": TEXT, "cache_salt": b"a"}, use_tqdm=False)

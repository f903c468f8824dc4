"""Pooling models (``LLM(runner="pooling")``): embed, classify, score, reward and encode, as vLLM.

    from jaxllm import LLM, PoolingParams
    llm = LLM("Qwen/Qwen3-Embedding-0.6B", runner="pooling")       # a *ForCausalLM checkpoint as an embedder
    vecs = llm.embed(["hello", "world"], pooling_params=PoolingParams(normalize=True))
    vecs[0].outputs.embedding                                       # list[float]
    llm.score("query", ["doc 1", "doc 2"])                          # cosine similarity (embedders)

    ranker = LLM("BAAI/bge-reranker-base")                          # runner="auto": *ForSequenceClassification
    ranker.score("query", ["doc 1", "doc 2"])[0].outputs.score      # cross-encoder score
    ranker.classify("text")[0].outputs.probs

Supported: every causal LM the generate path serves, as ``*ForCausalLM`` with ``runner="pooling"`` or ``*Model``
(embedders), ``*ForSequenceClassification`` (classifier, reward, cross-encoder when it has one label),
``convert="reward"`` / ``*ForRewardModeling`` and ``Qwen2ForRewardModel`` (per-token rewards; ``families.py``);
BertModel / RobertaModel / XLMRobertaModel / ModernBertModel (embedders) and their ``*ForSequenceClassification``
(classifiers, cross-encoders with BERT's token types). Pooling (CLS / MEAN / LAST, normalize) follows sentence-transformers'
``modules.json`` and ``1_Pooling/config.json`` when present (``config.py``).

Decoders pool on the paged engine as prefill-only requests (``runner.PoolingModelRunner``: chunked prompts, no
KV kept after a request, prefix-cache hits for LAST pooling); BERT-style encoders and ModernBERT run whole sequences on a dense
bidirectional path (``encoder_runner``). This package's ``__init__`` stays free of jax: the engine imports its
output types.
"""

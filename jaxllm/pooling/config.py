"""What a checkpoint is as a pooling model: runner choice, tasks, pooling type, head and activation.

vLLM's rules: ``runner="auto"`` picks "generate" for ``*ForCausalLM`` and "pooling" for ``*ForSequenceClassification``
and ``*Model`` (``BertModel``, ``XLMRobertaModel``, ``Qwen3Model``, ...; the decoder forms are in ``families``). A
``*ForCausalLM`` checkpoint with
``runner="pooling"`` becomes an embedding model (vLLM's ``convert="embed"``, as Qwen3-Embedding). Pooling type:
the model's default (LAST for decoders, CLS for BERT-style encoders), replaced by sentence-transformers'
``modules.json`` + ``1_Pooling/config.json`` when present (``st_config``); their ``Normalize`` module sets the
``normalize`` default (on when there is no sentence-transformers config), a Pooling module makes ``runner="auto"``
pool even a ``*ForCausalLM`` checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxllm.pooling.families import REWARD_MODELS, check_decoder_config, decoder_backbone, pooling_form
from jaxllm.pooling.st_config import (
    projected_size,
    sentence_transformers_pooling,
    sentence_transformers_tokenizer,
)

ENCODER_ARCHITECTURES = ("BertModel", "XLMRobertaModel", "RobertaModel", "BertForSequenceClassification",
                         "XLMRobertaForSequenceClassification", "RobertaForSequenceClassification",
                         "ModernBertModel", "ModernBertForSequenceClassification")
_GENERATE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "ChatModel", "LMHeadModel")
_POOLING_SUFFIXES = ("ForTextEncoding", "EmbeddingModel", "ForSequenceClassification", "ClassificationModel",
                     "ForRewardModeling", "RewardModel", "Model")
_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Softmax": "softmax", "Tanh": "tanh"}


@dataclasses.dataclass
class PoolerConfig:
    """vLLM's ``PoolerConfig`` (``LLM(pooler_config=...)``, a dict works too): overrides of the checkpoint's
    pooling. ``pooling_type``: "LAST", "CLS" or "MEAN"; ``normalize`` / ``dimensions`` / ``use_activation``:
    the defaults of the matching ``PoolingParams`` fields (``softmax`` / ``activation``: the older names of
    ``use_activation``); ``logit_bias``: subtracted from classification logits before the activation. None
    keeps the checkpoint's choice."""

    pooling_type: str | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    use_activation: bool | None = None
    softmax: bool | None = None
    activation: bool | None = None
    logit_bias: float | None = None

    def __post_init__(self) -> None:
        for name in ("normalize", "use_activation", "softmax", "activation"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"pooler_config {name} must be a bool or None, got {value!r}")
        if self.logit_bias is not None and (isinstance(self.logit_bias, bool)
                                            or not isinstance(self.logit_bias, (int, float))):
            raise TypeError(f"pooler_config logit_bias must be a float or None, got {self.logit_bias!r}")
        if self.use_activation is None:  # the older names, as vLLM still honours them
            self.use_activation = self.softmax if self.softmax is not None else self.activation

    @classmethod
    def of(cls, value: Any) -> PoolerConfig | None:
        """A PoolerConfig from ``LLM``'s keyword (None, a dict of the fields, or a PoolerConfig)."""
        if value is None or isinstance(value, PoolerConfig):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"pooler_config must be a dict or a PoolerConfig, got {type(value).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(f"pooler_config: {unknown} not supported; supported fields: {sorted(fields)}")
        out = cls(**value)
        if out.pooling_type is not None and str(out.pooling_type).upper() not in ("LAST", "CLS", "MEAN"):
            raise ValueError(f"pooler_config pooling_type={out.pooling_type!r} is not supported; choose 'LAST', "
                             "'CLS' or 'MEAN'")
        return out


@dataclasses.dataclass(frozen=True)
class PoolingModelInfo:
    """How a pooling model turns hidden states into outputs (host-side facts, no weights)."""

    name: str  # the model path, for messages
    architecture: str  # HF architectures[0]
    encoder: bool  # bidirectional (BERT family) rather than a causal decoder
    tasks: tuple[str, ...]  # pooling tasks it supports
    pooling_type: str  # "LAST", "CLS" or "MEAN"
    normalize: bool  # default of PoolingParams.normalize for embed tasks
    hidden_size: int
    num_labels: int = 0  # classifier outputs; 0 for embedding models
    classify_activation: str = "softmax"  # "softmax", "sigmoid" or "identity" (on [L] logits)
    score_activation: str = "sigmoid"  # cross-encoder score activation
    is_matryoshka: bool = False
    matryoshka_dimensions: tuple[int, ...] = ()
    default_dimensions: int | None = None  # pooler_config's PoolingParams defaults
    default_use_activation: bool | None = None
    logit_bias: float | None = None  # pooler_config's: subtracted from classification logits
    classifier_from_token: tuple[str, ...] = ()  # a causal LM's classifier tokens (``seq_cls_method``)
    use_pad_token: bool = True  # score pairs tokenized as a pair (else as one concatenated text)
    projected_size: int | None = None  # embedding size after sentence-transformers' Dense modules, if any
    max_seq_length: int | None = None  # sentence-transformers' sentence_bert_config.json: max_model_len default
    do_lower_case: bool = False  # ... and whether text prompts are lower-cased before tokenizing

    def model_max_len(self, derived: int) -> int:
        """The default ``max_model_len``: sentence-transformers' ``max_seq_length`` when the checkpoint has one
        (vLLM's rule), never beyond what the model's positions allow (``derived``)."""
        return derived if self.max_seq_length is None else min(derived, self.max_seq_length)

    @property
    def is_cross_encoder(self) -> bool:
        return "score" in self.tasks and "embed" not in self.tasks


def architecture_of(hf: dict[str, Any]) -> str:
    archs = hf.get("architectures") or []
    return archs[0] if archs else ""


def resolve_runner(runner: str, hf: dict[str, Any], has_st_pooling: bool = False) -> str:
    """"generate" or "pooling" for ``LLM(runner=...)``; "auto" is "pooling" for a checkpoint with a
    sentence-transformers Pooling module (``has_st_pooling``), else follows the architecture's suffix."""
    arch = architecture_of(hf)
    if runner != "auto":
        if runner == "generate" and decoder_backbone(arch) not in (None, arch):
            raise ValueError(f"{arch} is a pooling model; use runner='pooling' (or 'auto')")
        if runner == "generate" and arch in ENCODER_ARCHITECTURES:
            raise ValueError(f"{arch} is an encoder-only model and cannot generate; use runner='pooling'")
        return runner
    if has_st_pooling:
        return "pooling"
    if arch.endswith(_GENERATE_SUFFIXES) or not arch:
        return "generate"
    return "pooling" if arch.endswith(_POOLING_SUFFIXES) else "generate"


def check_convert(convert: str, runner: str, arch: str) -> None:
    """vLLM's ``convert`` for a checkpoint of architecture ``arch`` that runs as ``runner`` ("generate" or
    "pooling"). "auto" takes the architecture's default. With runner="pooling", "embed" is what jaxllm does to
    a causal LM or ``*Model`` and leaves a pooling architecture as it is (vLLM's ``as_embedding_model``);
    "classify" needs a ``*ForSequenceClassification`` checkpoint; "none" refuses a causal LM (it is no pooling
    model unconverted); "reward" makes a decoder without a classifier a per-token reward model
    (``pooling_model_info``). Any conversion under runner="generate" is an error."""
    if convert == "auto":
        return
    if runner == "generate":
        if convert != "none":
            raise ValueError(f"convert={convert!r} adapts a model for pooling, but {arch or 'the model'} runs as a "
                             "generative model: pass runner='pooling'")
        return
    if convert == "none" and arch.endswith("ForCausalLM"):
        raise ValueError("This model does not support `--runner pooling` with convert='none'. You can pass "
                         "convert='embed' (or 'auto') to adapt it into a pooling model.")
    if convert == "classify" and pooling_form(arch) != "classify":
        raise ValueError(f"convert='classify' of a {arch or 'causal LM'} checkpoint (a classifier head on a model "
                         "without one) is not supported yet; a *ForSequenceClassification checkpoint classifies "
                         "as it is")
    if convert == "reward" and arch in ENCODER_ARCHITECTURES:
        raise ValueError(f"convert='reward' of the encoder {arch} is not supported; it converts decoders")


def pooling_model_info(path: str, hf: dict[str, Any], pooler_config: Any = None,
                       convert: str = "auto") -> PoolingModelInfo:
    """The pooling facts of the checkpoint at ``path`` (config.json ``hf``), with ``pooler_config``'s overrides;
    ValueError for what jaxllm cannot pool. ``convert="reward"`` (vLLM's ``as_reward_model``) turns a decoder
    without a classifier into a reward model: "token_classify" only, every token's hidden row through the
    classification activation (softmax over the hidden dims unless ``problem_type`` says otherwise, or none with
    ``use_activation=False``)."""
    arch = architecture_of(hf)
    encoder = arch in ENCODER_ARCHITECTURES
    if not encoder and decoder_backbone(arch) is None:
        raise ValueError(f"architecture {arch!r} is not supported as a pooling model; supported: the "
                         f"{{Model, ForSequenceClassification}} forms of the causal LMs jaxllm serves and "
                         f"{', '.join(ENCODER_ARCHITECTURES)}")
    if not encoder:
        check_decoder_config(hf)
    st_type, st_normalize = sentence_transformers_pooling(path)
    form = pooling_form(arch)
    classifier = form == "classify"
    num_labels = num_labels_of(hf) if classifier else (1 if arch in REWARD_MODELS else 0)
    reward = (convert == "reward" or (convert == "auto" and form == "reward")) and not classifier \
        and arch not in REWARD_MODELS
    if arch in REWARD_MODELS:  # per-token rewards of its score MLP (one label)
        tasks = ("token_classify",)
    elif classifier:
        tasks = ("classify", "token_classify") + (("score",) if num_labels == 1 else ())
    else:
        tasks = ("token_classify",) if reward else ("embed", "token_embed")
    dims, size = hf.get("matryoshka_dimensions"), _pooled_size(hf, encoder)
    over = PoolerConfig.of(pooler_config) or PoolerConfig()
    if over.pooling_type is not None:
        st_type = str(over.pooling_type).upper()
    if over.normalize is not None:
        st_normalize = over.normalize
    return PoolingModelInfo(
        name=path, architecture=arch, encoder=encoder, tasks=tasks,
        pooling_type=st_type or _default_pooling(hf, encoder),
        normalize=st_normalize, hidden_size=size, num_labels=num_labels,
        classify_activation=_classify_activation(hf, size if reward else num_labels),
        score_activation=_score_activation(hf),
        is_matryoshka=bool(hf.get("is_matryoshka") or dims), matryoshka_dimensions=tuple(dims or ()),
        default_dimensions=over.dimensions, default_use_activation=over.use_activation, logit_bias=over.logit_bias,
        projected_size=None if classifier else projected_size(path, size),
        classifier_from_token=tuple(hf["classifier_from_token"]) if classifier and seq_cls_method(hf) else (),
        use_pad_token=bool(hf.get("use_pad_token", not (classifier and seq_cls_method(hf)))),
        **sentence_transformers_tokenizer(path))


def _default_pooling(hf: dict[str, Any], encoder: bool) -> str:
    """LAST for decoders, CLS for encoders; ModernBERT's classifier pools as its ``classifier_pooling`` says
    ("cls" or "mean"), as transformers' ``ModernBertForSequenceClassification``."""
    if not encoder:
        return "LAST"
    if architecture_of(hf) == "ModernBertForSequenceClassification":
        mode = hf.get("classifier_pooling", "cls")
        if mode not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling={mode!r} is not supported; choose 'cls' or 'mean'")
        return mode.upper()
    return "CLS"


def _pooled_size(hf: dict[str, Any], encoder: bool) -> int:
    """The size of a pooled row: the hidden size (GPT-2's ``n_embd``, DBRX's ``d_model``: the family's names), or OPT's
    projected ``word_embed_proj_dim`` that its backbone outputs."""
    if encoder:
        return int(hf["hidden_size"])
    from jaxllm.config_archs import shared_names_hf

    shared = shared_names_hf(hf)
    return int(shared.get("word_embed_proj_dim") or shared["hidden_size"])


SEQ_CLS_METHODS = ("from_2_way_softmax", "no_post_processing")


def seq_cls_method(hf: dict[str, Any]) -> str | None:
    """How a causal LM checkpoint becomes a classifier from its LM head (vLLM's ``classifier_from_token``
    conversion, set through ``hf_overrides``): "from_2_way_softmax" (two tokens ["no", "yes"]: one label,
    ``lm_head[yes] - lm_head[no]``, as Qwen3-Reranker with ``is_original_qwen3_reranker``), "no_post_processing"
    (one label per token, ``lm_head[tokens]``), or None for a checkpoint with its own ``score`` head."""
    method = hf.get("method") or ("from_2_way_softmax" if hf.get("is_original_qwen3_reranker") else None)
    if method is None:
        return None
    tokens = hf.get("classifier_from_token")
    if method not in SEQ_CLS_METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {SEQ_CLS_METHODS}")
    if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"method={method!r} needs classifier_from_token, a list of tokens, got {tokens!r}")
    if method == "from_2_way_softmax" and len(tokens) != 2:
        raise ValueError(f"method='from_2_way_softmax' needs two classifier_from_token (the 'no' and 'yes' "
                         f"tokens), got {tokens!r}")
    return method


def num_labels_of(hf: dict[str, Any]) -> int:
    method = seq_cls_method(hf)
    if method is not None:
        return 1 if method == "from_2_way_softmax" else len(hf["classifier_from_token"])
    if hf.get("id2label"):
        return len(hf["id2label"])
    return int(hf.get("num_labels", 2))


def _classify_activation(hf: dict[str, Any], num_labels: int) -> str:
    """transformers' loss convention: regression -> identity, multi-label -> sigmoid, else softmax (sigmoid
    for a single label)."""
    problem = hf.get("problem_type") or ""
    if problem == "regression":
        return "identity"
    if problem == "multi_label_classification":
        return "sigmoid"
    return "sigmoid" if num_labels < 2 else "softmax"


def _score_activation(hf: dict[str, Any]) -> str:
    """A cross-encoder's activation: sentence-transformers' ``activation_fn`` (or the older
    ``sbert_ce_default_activation_function``) when the config names one, else sigmoid for one label and softmax
    for more, whatever the ``problem_type`` (vLLM's cross-encoder rule: a score is a probability)."""
    name = (hf.get("sentence_transformers") or {}).get("activation_fn") or hf.get(
        "sbert_ce_default_activation_function")
    if not name:
        return "sigmoid" if num_labels_of(hf) < 2 else "softmax"
    short = name.rsplit(".", 1)[-1]
    if short not in _ACTIVATIONS:
        raise ValueError(f"cross-encoder activation {name!r} is not supported; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[short]

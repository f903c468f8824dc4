"""``PoolingParams``: the per-request options of the pooling methods (vLLM's ``vllm.pooling_params``).

Which options a task takes, as vLLM: ``embed`` / ``token_embed`` take ``dimensions`` and ``normalize``
(default True); ``classify`` / ``score`` / ``token_classify`` take ``use_activation`` (default True).
``verify(task, info)`` fills the defaults and rejects options of another task, before any device work.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

POOLING_TASKS = ("embed", "classify", "score", "token_embed", "token_classify")
_VALID = {
    "embed": ("dimensions", "normalize"),
    "token_embed": ("dimensions", "normalize"),
    "classify": ("use_activation",),
    "score": ("use_activation",),
    "token_classify": ("use_activation",),
}
_ALL = ("dimensions", "normalize", "use_activation")


@dataclasses.dataclass(kw_only=True)
class PoolingParams:
    """API parameters of pooling models.

    ``truncate_prompt_tokens``: keep only the last k prompt tokens (-1: the model's ``max_model_len``; None:
    no truncation). ``dimensions``: matryoshka output size (models whose config says they support it).
    ``normalize``: L2-normalize embeddings. ``use_activation``: apply the classifier's activation (softmax, or
    sigmoid for one label) to classification outputs; ``softmax`` and ``activation`` are its older names."""

    truncate_prompt_tokens: int | None = None
    dimensions: int | None = None
    normalize: bool | None = None
    softmax: bool | None = None
    activation: bool | None = None
    use_activation: bool | None = None
    step_tag_id: int | None = None
    returned_token_ids: list[int] | None = None
    task: str | None = None
    # set by verify: True when the pooled result needs every prompt position computed (token-level tasks,
    # CLS / MEAN pooling), so the request must not start from prefix-cache hits
    skip_reading_prefix_cache: bool | None = None
    extra_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        t = self.truncate_prompt_tokens
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < -1 or t == 0):
            raise ValueError(f"truncate_prompt_tokens must be -1 or a positive int, got {t!r}")
        d = self.dimensions
        if d is not None and (isinstance(d, bool) or not isinstance(d, int)):
            raise TypeError(f"dimensions must be an int, got {d!r}")
        for name in ("normalize", "softmax", "activation", "use_activation"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool or None, got {v!r}")
        if self.task is not None and self.task not in POOLING_TASKS:
            raise ValueError(f"task={self.task!r} is not a pooling task; choose one of {POOLING_TASKS}")

    def clone(self) -> PoolingParams:
        """A private copy (``verify`` fills it in place): the immutable fields shared, the list and dict ones
        copied. A copy per prompt costs a microsecond where ``copy.deepcopy`` costs tens (10^4 prompts a call)."""
        out = copy.copy(self)
        if self.returned_token_ids is not None:
            out.returned_token_ids = list(self.returned_token_ids)
        if self.extra_kwargs is not None:
            out.extra_kwargs = copy.deepcopy(self.extra_kwargs)
        return out

    def verify(self, task: str, info: Any = None) -> None:
        """Set ``task`` and the defaults of its options; raise ValueError for an option of another task, a
        matryoshka size the model does not support, or step-pooling options. ``info``: the model's
        ``PoolingModelInfo`` (None: no model-specific checks)."""
        if task not in POOLING_TASKS:
            raise ValueError(f"unknown pooling task {task!r}; choose one of {POOLING_TASKS}")
        if self.task is None:
            self.task = task
        elif self.task != task:
            raise ValueError(f"You cannot overwrite self.task={self.task!r} with task={task!r}!")
        if self.use_activation is None:  # the older names, as vLLM still honours them
            self.use_activation = self.softmax if self.softmax is not None else self.activation
        if info is not None:  # the model's pooler_config defaults, for the options this task takes
            if self.dimensions is None and task in ("embed", "token_embed"):
                self.dimensions = info.default_dimensions
            if self.use_activation is None and task not in ("embed", "token_embed"):
                self.use_activation = info.default_use_activation
        if self.step_tag_id is not None or self.returned_token_ids is not None:
            raise ValueError("step_tag_id / returned_token_ids need STEP pooling, which jaxllm does not support")
        if task in ("embed", "token_embed"):
            if self.normalize is None:
                self.normalize = True if info is None else info.normalize
            if self.dimensions is not None:
                _check_dimensions(self.dimensions, info)
        elif self.use_activation is None:
            self.use_activation = True
        if self.skip_reading_prefix_cache is None:
            every_position = task.startswith("token_") or (info is not None and info.pooling_type != "LAST")
            self.skip_reading_prefix_cache = every_position
        invalid = [k for k in _ALL if k not in _VALID[task] and getattr(self, k) is not None]
        if invalid:
            raise ValueError(f"Task {task} only supports {list(_VALID[task])} parameters, does not support "
                             f"{invalid} parameters")


def _check_dimensions(dimensions: int, info: Any) -> None:
    if info is None:
        return
    if not info.is_matryoshka:
        raise ValueError(f"Model {info.name!r} does not support matryoshka representation, changing output "
                         f"dimensions (dimensions={dimensions}) will lead to poor results.")
    if info.matryoshka_dimensions:
        if dimensions not in info.matryoshka_dimensions:
            raise ValueError(f"Model {info.name!r} only supports {list(info.matryoshka_dimensions)} matryoshka "
                             f"dimensions, got dimensions={dimensions}")
    else:
        size = info.projected_size or info.hidden_size
        if not 1 <= dimensions <= size:
            raise ValueError(f"dimensions must be in [1, {size}], got {dimensions}")

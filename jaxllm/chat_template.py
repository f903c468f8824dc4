"""Which chat template ``LLM.chat`` renders with, the content format it expects, and its keyword arguments.

vLLM's rules: a ``chat_template`` argument is used as given; otherwise the tokenizer's own template (with
``tools``, its "tool_use" template where it keeps several by name); no template at all is a ValueError (HF
removed the default template). ``"auto"`` content format is "openai" only when the template loops over the
content of a message it got by looping over ``messages`` (or a variable set from it), as vLLM's Jinja syntax
tree walk decides; any other template gets content as one string.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

NO_TEMPLATE = ("As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat "
               "template if the tokenizer does not define one: pass chat_template=<Jinja str> to LLM.chat")
# keys chat_template_kwargs may not carry: the template is chosen by chat_template, and rendering is text
RESERVED_KWARGS = ("chat_template", "tokenize")


def resolve_template(tokenizer: Any, chat_template: str | None, tools: list[dict] | None) -> str | None:
    """The Jinja source ``LLM.chat`` renders with; a ValueError (vLLM's message) when there is none. None for a
    tokenizer that renders chats itself without templates (mistral_common's)."""
    if chat_template is not None:
        if not isinstance(chat_template, str):
            raise TypeError(f"chat_template must be a str (a Jinja template), got {type(chat_template).__name__}")
        return chat_template
    try:
        template = tokenizer.get_chat_template(None, tools=tools)
    except NotImplementedError:  # mistral_common: no templates by design, its apply_chat_template renders
        return None
    except (ValueError, KeyError, AttributeError, TypeError):  # HF: no template set, or none by that name
        template = None
    if template is None or template == "":
        raise ValueError(NO_TEMPLATE)
    return template


def template_kwargs(chat_template_kwargs: Any, **explicit: Any) -> dict[str, Any]:
    """The template's keyword arguments: ``explicit`` (add_generation_prompt, continue_final_message, tools)
    updated with ``chat_template_kwargs`` (as vLLM's ``LLM.chat``: the dict's keys win). ``chat_template`` and
    ``tokenize`` in the dict are a ValueError, as in vLLM."""
    if chat_template_kwargs is None:
        chat_template_kwargs = {}
    if not isinstance(chat_template_kwargs, dict) or not all(isinstance(k, str) for k in chat_template_kwargs):
        raise TypeError(f"chat_template_kwargs must be a dict with str keys, got {chat_template_kwargs!r}")
    reserved = sorted(set(RESERVED_KWARGS) & chat_template_kwargs.keys())
    if reserved:
        raise ValueError(f"Found unexpected chat template kwargs from request: {reserved} (pass the template as "
                         "LLM.chat's chat_template argument; chat renders text)")
    merged = {**explicit, **chat_template_kwargs}
    if merged.get("add_generation_prompt") and merged.get("continue_final_message"):
        raise ValueError("continue_final_message and add_generation_prompt cannot both be True: "
                         "continue_final_message continues the last message, add_generation_prompt starts a new one")
    return merged


def _environment():
    """A Jinja environment like HF's for chat templates: loop controls, and the ``{% generation %}`` block
    (assistant-token masks) parsed as its body, so templates that use them can be read."""
    import jinja2.ext
    import jinja2.sandbox

    class GenerationTag(jinja2.ext.Extension):
        tags = frozenset({"generation"})

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    return jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])


@functools.lru_cache(maxsize=32)
def detect_content_format(template: str) -> str:
    """"openai" or "string" (see the module docstring); "string" when the template does not parse."""
    import jinja2

    try:
        ast = _environment().parse(template)
    except jinja2.TemplateError:
        return "string"
    return "openai" if next(_content_loops(ast), None) is not None else "string"


def _names_bound_to(root: Any, name: str) -> list[str]:
    """``name`` and every variable set from it (``{% set loop_messages = messages[1:] %}``), transitively."""
    from jinja2 import nodes

    names, queue = [name], [name]
    while queue:
        current = queue.pop()
        for assign in root.find_all(nodes.Assign):
            target = assign.target
            if isinstance(target, nodes.Name) and target.name not in names and _reads(assign.node, current):
                names.append(target.name)
                queue.append(target.name)
    return names


def _loop_targets(root: Any, sources: list[str], key: str | None = None) -> Iterator[str]:
    """Target names of ``{% for x in S %}`` loops whose S reads one of ``sources`` (its ``key`` item if given)."""
    from jinja2 import nodes

    for loop in root.find_all(nodes.For):
        if isinstance(loop.target, nodes.Name) and any(_reads(loop.iter, s, key) for s in sources):
            yield loop.target.name


def _content_loops(root: Any) -> Iterator[str]:
    """Loops over ``message['content']`` where ``message`` loops over ``messages``."""
    message_vars = list(_loop_targets(root, _names_bound_to(root, "messages")))
    return _loop_targets(root, message_vars, "content")


def _reads(node: Any, name: str, key: str | None = None) -> bool:
    """Whether ``node`` is ``name`` (or ``name[key]`` / ``name.key``), possibly sliced, filtered or tested."""
    from jinja2 import nodes

    if isinstance(node, (nodes.Filter, nodes.Test)):
        return node.node is not None and _reads(node.node, name, key)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
        return _reads(node.node, name, key)
    if key is None:
        return isinstance(node, nodes.Name) and node.name == name and node.ctx == "load"
    if isinstance(node, nodes.Getitem):
        item = isinstance(node.arg, nodes.Const) and node.arg.value == key
    elif isinstance(node, nodes.Getattr):
        item = node.attr == key
    else:
        return False
    return item and _reads(node.node, name)

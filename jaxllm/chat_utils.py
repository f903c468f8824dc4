"""Chat messages for ``LLM.chat``: validation, OpenAI-style content parts, and the chat template's content format.

A message is ``{"role": ..., "content": ...}`` where content is a str, or a list of OpenAI-style parts
(``{"type": "text", "text": ...}``; a bare string in the list counts as a text part). Only text is supported:
image / audio / video parts are a ValueError naming the part's type. A template either renders
``message['content']`` as a string ("string" format: text parts are joined with "\\n") or loops over its parts
("openai" format: the list of ``{"type": "text", "text": ...}`` dicts is passed). ``"auto"`` reads the
template (its Jinja syntax tree) to see which one it expects, as vLLM does.
"""

from __future__ import annotations

import functools
from typing import Any

from jaxllm.sampling_checks import check_unicode

CONTENT_FORMATS = ("auto", "string", "openai")
_TEXT_TYPES = ("text", "input_text", "output_text", "refusal", "thinking")
_MEDIA_TYPES = ("image_url", "image", "image_pil", "image_embeds", "input_image", "audio_url", "input_audio",
                "audio", "audio_embeds", "video_url", "video", "file")


def as_conversations(messages: Any) -> list[list[dict]]:
    """One conversation (a list of message dicts) or a batch of them, as a list of conversations."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TypeError("messages must be a non-empty list of {'role', 'content'} dicts or a list of them")
    conversations = [messages] if isinstance(messages[0], dict) else list(messages)
    for i, conv in enumerate(conversations):
        if not isinstance(conv, (list, tuple)) or not all(isinstance(m, dict) for m in conv):
            raise TypeError(f"conversation {i} must be a list of {{'role', 'content'}} dicts")
    return [list(c) for c in conversations]


def normalize_messages(conversation: list[dict], content_format: str) -> list[dict]:
    """Messages ready for the template: content as a str ("string") or a list of text parts ("openai").
    Raises ValueError naming the message index for a malformed message."""
    out = []
    for i, msg in enumerate(conversation):
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError(f"message {i}: 'role' must be a non-empty str, got {role!r}")
        check_unicode(f"message {i}: 'role'", role)
        msg = dict(msg)
        if "content" not in msg or msg["content"] is None:
            # vLLM: an assistant message that only calls tools may have no content
            if not (role == "assistant" and msg.get("tool_calls")):
                raise ValueError(f"message {i} (role {role!r}): 'content' is missing or None; only an assistant "
                                 "message with tool_calls may omit it")
            msg["content"] = "" if content_format == "string" else []
        else:
            texts = _text_parts(i, msg["content"])
            if content_format == "string":
                msg["content"] = texts if isinstance(texts, str) else "\n".join(texts)
            else:
                parts = [texts] if isinstance(texts, str) else texts
                msg["content"] = [{"type": "text", "text": t} for t in parts]
        out.append(msg)
    return out


def _text_parts(index: int, content: Any) -> str | list[str]:
    """A str content as is, or the texts of a list of parts."""
    if isinstance(content, str):
        check_unicode(f"message {index}: 'content'", content)
        return content
    if not isinstance(content, (list, tuple)):  # a malformed message: ValueError, as for the others
        raise ValueError(f"message {index}: 'content' must be a str or a list of content parts, "  # noqa: TRY004
                         f"got {type(content).__name__}")
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            check_unicode(f"message {index}, part {j}", part)
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_TYPES:
            text = part.get(kind if kind in ("refusal", "thinking") else "text")
            if not isinstance(text, str):
                raise ValueError(f"message {index}, part {j}: a {kind!r} part needs a str {kind!r} field")
            check_unicode(f"message {index}, part {j}", text)
            texts.append(text)
        elif kind in _MEDIA_TYPES:
            raise ValueError(f"message {index}, part {j}: content parts of type {kind!r} are not supported "
                             "(jaxllm serves text-only models); send text parts")
        else:
            raise ValueError(f"message {index}, part {j}: unknown content part {part!r}; expected "
                             "{'type': 'text', 'text': ...}")
    return texts


def resolve_content_format(content_format: str, template: str | None) -> str:
    """"string" or "openai": the given format, or (``"auto"``) the one ``template`` expects."""
    if content_format not in CONTENT_FORMATS:
        raise ValueError(f"chat_template_content_format={content_format!r} is not supported; choose one of "
                         f"{CONTENT_FORMATS}")
    if content_format != "auto":
        return content_format
    return _detect_format(template) if template else "string"


@functools.lru_cache(maxsize=32)
def _detect_format(template: str) -> str:
    """"openai" when the template loops over a message's content (``{% for x in message['content'] %}``) or
    reads a part's ``type``/``text`` inside such a loop; "string" otherwise (also when it does not parse)."""
    import jinja2
    from jinja2 import nodes

    try:
        ast = jinja2.Environment().parse(template)
    except jinja2.TemplateError:
        return "string"
    for loop in ast.find_all(nodes.For):
        if _reads_content(loop.iter):
            return "openai"
    return "string"


def _reads_content(node: Any) -> bool:
    from jinja2 import nodes

    if isinstance(node, nodes.Getitem):
        return isinstance(node.arg, nodes.Const) and node.arg.value == "content"
    if isinstance(node, nodes.Getattr):
        return node.attr == "content"
    if isinstance(node, nodes.Filter):  # e.g. message['content'] | selectattr(...)
        return node.node is not None and _reads_content(node.node)
    return False


def render_conversations(tokenizer: Any, conversations: list[list[dict]], content_format: str,
                         **template_kwargs: Any) -> list[dict[str, Any]]:
    """Each conversation through the tokenizer's chat template: TokensPrompt dicts (``prompt`` text and its
    ``prompt_token_ids``). ``template_kwargs``: the template's arguments (chat_template, add_generation_prompt,
    tools, ...). With several conversations, an error names the one at fault."""
    prompts = []
    for k, conv in enumerate(conversations):
        try:
            msgs = normalize_messages(conv, content_format)
            text = apply_chat_template(tokenizer, msgs, **template_kwargs)
        except (ValueError, TypeError) as e:
            if len(conversations) == 1:
                raise
            raise (ValueError if isinstance(e, ValueError) else TypeError)(f"conversation {k}: {e}") from e
        ids = tokenizer(text, add_special_tokens=False).input_ids
        prompts.append({"prompt": text, "prompt_token_ids": ids})
    return prompts


def apply_chat_template(tokenizer: Any, conversation: list[dict], **kwargs: Any) -> str:
    """The tokenizer's chat template as text. An error the template raises (Gemma's "System role not supported",
    roles that do not alternate) becomes a ValueError with its message, as in vLLM."""
    import jinja2

    try:
        return tokenizer.apply_chat_template(conversation, tokenize=False, **kwargs)
    except jinja2.TemplateError as e:
        raise ValueError(f"chat template error: {e}") from e

"""Chat messages for ``LLM.chat`` / ``LLM.preprocess_chat``: validation, OpenAI-style content parts, rendering.

A message is ``{"role": ..., "content": ...}`` where content is a str, or a list of OpenAI-style parts
(``{"type": "text", "text": ...}``; a bare string in the list counts as a text part). Only text is supported:
image / audio / video parts are a ValueError naming the part's type. A template either renders
``message['content']`` as a string ("string" format: text parts are joined with "\\n") or loops over its parts
("openai" format: the list of ``{"type": "text", "text": ...}`` dicts is passed); ``jaxllm.chat_template``
picks the template and, for ``"auto"``, the format it expects, as vLLM does. The rendered text is tokenized
without special tokens: the template wrote them.
"""

from __future__ import annotations

import json
from typing import Any

from jaxllm.chat_template import detect_content_format, resolve_template, template_kwargs
from jaxllm.inputs import check_tokenization_kwargs
from jaxllm.sampling_checks import check_unicode

CONTENT_FORMATS = ("auto", "string", "openai")
_TEXT_TYPES = ("text", "input_text", "output_text", "refusal", "thinking")
_MEDIA_TYPES = ("image_url", "image", "image_pil", "image_embeds", "input_image", "audio_url", "input_audio",
                "audio", "audio_embeds", "video_url", "video", "file")


def as_conversations(messages: Any) -> list[list[dict]]:
    """One conversation (a list of message dicts) or a batch of them, as a list of conversations (none for an
    empty list, as vLLM)."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError("messages must be a list of {'role', 'content'} dicts or a list of them, got "
                        f"{type(messages).__name__}")
    if not messages:
        return []
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
            if content_format == "string" or role == "tool":  # vLLM: a tool result is one string
                msg["content"] = texts if isinstance(texts, str) else "\n".join(texts)
            else:
                parts = [texts] if isinstance(texts, str) else texts
                msg["content"] = [{"type": "text", "text": t} for t in parts]
        if role == "assistant" and isinstance(msg.get("tool_calls"), list):
            _tool_calls_for_template(msg)
        if role == "assistant" and msg.get("reasoning") is not None:
            msg["reasoning_content"] = msg["reasoning"]  # vLLM: the name Qwen3-style templates read
        out.append(msg)
    return out


def _tool_calls_for_template(msg: dict) -> None:
    """An assistant message's ``tool_calls`` as HF tool-use templates read them (as vLLM passes them): each
    call's ``function.arguments`` as a dict (OpenAI sends a JSON str; an unparsable or missing one becomes
    ``{}``), and an empty list dropped so the template takes its plain assistant path. Copies; the caller's
    message is left as it was."""
    if not msg["tool_calls"]:
        del msg["tool_calls"]
        return
    calls = []
    for call in msg["tool_calls"]:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            args = function.get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    args = {}
            elif not isinstance(args, (dict, list)):
                args = {}
            call = {**call, "function": {**function, "arguments": args}}
        calls.append(call)
    msg["tool_calls"] = calls


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
    """"string" or "openai": the given format, or (``"auto"``) the one ``template`` expects
    (``jaxllm.chat_template.detect_content_format``; "string" without a template)."""
    if content_format not in CONTENT_FORMATS:
        raise ValueError(f"chat_template_content_format={content_format!r} is not supported; choose one of "
                         f"{CONTENT_FORMATS}")
    if content_format != "auto":
        return content_format
    return detect_content_format(template) if template is not None else "string"


def chat_prompts(tokenizer: Any, messages: Any, *, chat_template: str | None = None,
                 chat_template_content_format: str = "auto", add_generation_prompt: bool = True,
                 continue_final_message: bool = False, tools: list[dict[str, Any]] | None = None,
                 chat_template_kwargs: dict[str, Any] | None = None,
                 tokenization_kwargs: dict[str, Any] | None = None,
                 mm_processor_kwargs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``LLM.chat`` / ``LLM.preprocess_chat``'s prompts: one TokensPrompt dict (``prompt`` text and
    ``prompt_token_ids``) per conversation of ``messages``. Every check runs before anything is queued."""
    if tokenizer is None:
        raise ValueError("chat needs a tokenizer, but LLM was built with skip_tokenizer_init=True")
    if mm_processor_kwargs is not None:
        raise ValueError("mm_processor_kwargs is not supported: jaxllm serves text-only models")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise TypeError(f"tools must be a list of dicts (OpenAI tool schemas), got {tools!r}")
    tokenization_kwargs = check_tokenization_kwargs(tokenization_kwargs)
    kwargs = template_kwargs(chat_template_kwargs, add_generation_prompt=add_generation_prompt,
                             continue_final_message=continue_final_message, tools=tools)
    conversations = as_conversations(messages)
    template = resolve_template(tokenizer, chat_template, kwargs.get("tools"))
    content_format = resolve_content_format(chat_template_content_format, template)
    if template is not None:
        kwargs["chat_template"] = template
    return render_conversations(tokenizer, conversations, content_format, tokenization_kwargs, **kwargs)


def render_conversations(tokenizer: Any, conversations: list[list[dict]], content_format: str,
                         tokenization_kwargs: dict[str, Any] | None = None,
                         **template_kwargs: Any) -> list[dict[str, Any]]:
    """Each conversation through the chat template: TokensPrompt dicts (``prompt`` text and its
    ``prompt_token_ids``). ``template_kwargs``: the template's arguments (chat_template, add_generation_prompt,
    tools, ...). The text is tokenized without special tokens (the template wrote them: no second BOS), as vLLM
    does, unless ``tokenization_kwargs`` says otherwise. With several conversations, an error names the one at
    fault."""
    encode_kwargs = {"add_special_tokens": False, **(tokenization_kwargs or {})}
    prompts = []
    for k, conv in enumerate(conversations):
        try:
            msgs = normalize_messages(conv, content_format)
            text = apply_chat_template(tokenizer, msgs, **template_kwargs)
        except (ValueError, TypeError) as e:
            if len(conversations) == 1:
                raise
            raise (ValueError if isinstance(e, ValueError) else TypeError)(f"conversation {k}: {e}") from e
        ids = tokenizer(text, **encode_kwargs).input_ids
        prompts.append({"prompt": text, "prompt_token_ids": ids})
    return prompts


def apply_chat_template(tokenizer: Any, conversation: list[dict], **kwargs: Any) -> str:
    """The chat template's text. Whatever the template raises (Gemma's "System role not supported", roles that
    do not alternate, a template reading a field the message lacks) becomes a ValueError with its message, as in
    vLLM."""
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, **kwargs)
    except Exception as e:  # the template is user code: vLLM reports any of its errors as a ValueError
        raise ValueError(f"chat template error: {type(e).__name__}: {e}") from e
    if not isinstance(text, str):
        raise TypeError(f"the chat template rendered {type(text).__name__}, not text")
    return text

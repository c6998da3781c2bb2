"""Diffutron's chat template, as a Jinja template usable with any tokenizer's `apply_chat_template`."""

from __future__ import annotations

from typing import Any

#: Diffutron's conversation format (its authors set it on every BERT-family tokenizer; no BOS/EOS is added):
#: an optional `[SYS]` block, then `[Question]`/`[Answer]` blocks; the generation prompt opens an answer.
DIFFUTRON_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '[SYS]\\n' + message['content'] + '\\n[/SYS]\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '[Question]\\n' + message['content'] + '\\n[/Question]\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '[Answer]\\n' + message['content'] + '\\n[/Answer]\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '[Answer]\\n' }}{%- endif -%}"
)

#: Where a Diffutron answer ends (besides EOS).
DIFFUTRON_END_OF_ANSWER = "[/Answer]"

CHAT_ROLES = ("system", "user", "assistant")


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Check a conversation: a non-empty list of `{"role": ..., "content": str}` with known roles.

    Raises:
        TypeError: a message that is not a dict, or a `content` that is not a string.
        ValueError: an empty conversation, a message without `role` or `content`, or an unknown role.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("A conversation must be a non-empty list of messages ({'role': ..., 'content': ...}).")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(f"Message {index} must be a dict with 'role' and 'content', got {type(message).__name__}.")
        missing = [key for key in ("role", "content") if key not in message]
        if missing:
            raise ValueError(f"Message {index} has no {' and no '.join(repr(k) for k in missing)} key.")
        if message["role"] not in CHAT_ROLES:
            raise ValueError(
                f"Message {index} has role {message['role']!r}; allowed roles are {', '.join(map(repr, CHAT_ROLES))}."
            )
        if not isinstance(message["content"], str):
            raise TypeError(f"Message {index} must have a string 'content', got {type(message['content']).__name__}.")
    return list(messages)

"""Which native tool-call format a chat template writes, read from the template's text."""

from __future__ import annotations

import re
from typing import Any

# In order: the first match wins. Each marker is text the template writes into the prompt or the answer.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("mistral", re.compile(re.escape("[TOOL_CALLS]"))),  # Mistral v0.3 / Small / Nemo
    ("hermes", re.compile(re.escape("<tool_call>"))),  # Qwen2.5, Hermes 2 Pro / 3
    ("pythonic", re.compile(r"\[func_name\d*\(")),  # Llama 3.2 pythonic, Llama 4, ToolACE
    ("llama3_json", re.compile(r'\\?"parameters\\?":')),  # Llama 3.1 / 3.2 / 3.3 JSON
)


def detect_tool_parser(chat_template: str | None) -> str | None:
    """The native format (`hermes`, `llama3_json`, `pythonic`, `mistral`) of a chat template that takes tools,
    else None."""
    if not chat_template or "tools" not in chat_template:
        return None
    return next((name for name, marker in _RULES if marker.search(chat_template)), None)


def native_format(model: Any) -> str | None:
    """The native tool-call format an `HFModel`'s chat template writes (`hermes`, `llama3_json`, `mistral`,
    `pythonic`), or None when it has no template or no tool support."""
    return detect_tool_parser(model.chat_template)

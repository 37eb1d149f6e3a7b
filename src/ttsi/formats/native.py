"""The base of native tool-call formats: a model's own call syntax, with the tools given to its chat template.

A native format asks for the answer the way the model was trained to answer: the task's turns go to the chat
template as they are (an assistant turn keeps its `tool_calls`, a tool turn its `tool_call_id`), no system prompt
lists the tools, and `chat_tools` hands the OpenAI schemas to `apply_chat_template(..., tools=...)`. `render` writes
what the template writes for an assistant turn with those `tool_calls`, without the end-of-turn token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ttsi import jsonio
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages
from ttsi.task import Task


class NativeFormat(AnswerFormat):
    """Shared by the native formats: prompts through the chat template's own tool support."""

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        """The task's own system turn (if any), the demonstrations as user/assistant turns, then the task's turns."""
        turns = self.history(task)
        head = turns[:1] if turns and turns[0]["role"] == "system" else []
        shots: Messages = []
        for query, answer in demos:
            shots += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
        return [*head, *shots, *turns[len(head):]]

    def history(self, task: Task) -> Messages:
        return [dict(m) for m in task.messages]

    def chat_tools(self, task: Task) -> list[dict[str, Any]] | None:
        return [t.to_openai() for t in task.tools]


def dumps(value: Any) -> str:
    """JSON as chat templates' `tojson` writes it (transformers: `json.dumps`, ensure_ascii off)."""
    return json.dumps(value, ensure_ascii=False)


def decode_json(text: str, start: int = 0) -> tuple[Any, int]:
    """`jsonio.decode`, with its failure as an AnswerParseError (`too_deep`, else `bad_json`)."""
    try:
        return jsonio.decode(text, start)
    except jsonio.BadJSON as e:
        reason = "too_deep" if e.reason == "too_deep" else "bad_json"
        raise AnswerParseError(reason, e.msg) from None

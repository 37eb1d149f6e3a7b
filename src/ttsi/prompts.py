"""The chat messages the agent sends: the answer prompt (with optional demonstrations) and the synthesis prompt.

`answer_prompt` and `synthesis_prompt` render them to the model's prompt text; every stage goes through these two, so
a native format's tools reach the chat template the same way everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ttsi.formats import AnswerFormat, AnswerParseError, FreeForm, Messages, tools_block
from ttsi.task import Answer, Task, Tool

if TYPE_CHECKING:
    from ttsi.model import HFModel


def answer_messages(task: Task, fmt: AnswerFormat, demos: Sequence[tuple[str, str]] = ()) -> Messages:
    """The turns that ask for the task's answer, in the task's own format, after optional demonstrations."""
    return fmt.messages(task, demos)


def answer_prompt(model: HFModel, task: Task, fmt: AnswerFormat, demos: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt text the model answers `task` after: `answer_messages`, with a native format's tools given to the
    chat template."""
    return model.chat_prompt(answer_messages(task, fmt, demos), tools=fmt.chat_tools(task))


def synthesis_prompt(model: HFModel, task: Task, fmt: AnswerFormat) -> str:
    """The prompt text that asks `model` for a synthetic pair. The tools are listed in the request itself, never
    given to the template: a template's tool prompt asks for a call, where this asks for a request and its answer."""
    return model.chat_prompt(synthesis_messages(task, fmt))


def synthesis_messages(task: Task, fmt: AnswerFormat) -> Messages:
    """Ask for one new request similar to the task's, with its answer. The task's label is never shown."""
    if isinstance(fmt, FreeForm):
        return [{"role": "user", "content": _free_form_synthesis(task, fmt)}]
    prompt = (
        "You write training data for a tool-calling assistant. The assistant can call these functions:\n"
        f"{tools_block(task.tools)}\n\n"
        f"Example request:\n{task.query}\n\n"
        "Write one new user request that is similar to the example but not the same, that these functions can "
        f"serve, and its correct answer. {fmt.instruction()}\n"
        "Reply in exactly this form:\nRequest: <the new request>\nAnswer: <the answer>"
    )
    return [{"role": "user", "content": prompt}]


def _free_form_synthesis(task: Task, fmt: FreeForm) -> str:
    """A free-form task's synthesis request: a new question like its own, and that question's answer."""
    return (
        f"You write training data for an assistant that {fmt.purpose}.\n\n"
        f"Example question:\n{task.query}\n\n"
        "Write one new question that is similar to the example but not the same, and its correct answer. "
        f"{fmt.pair_instruction()}\n"
        "Reply in exactly this form:\nRequest: <the new question>\nAnswer: <the answer>"
    )


_PAIR = re.compile(r"Request:\s*(?P<query>.*?)\s*\n\s*Answer:\s*(?P<answer>.*)", re.DOTALL | re.IGNORECASE)


def render_pair(query: str, answer: Answer, fmt: AnswerFormat, tools: Sequence[Tool] = ()) -> str:
    """The reply a perfect synthesizer writes: the inverse of `parse_pair`."""
    return f"Request: {query}\nAnswer: {fmt.render(answer, tools)}"


def parse_pair(text: str, fmt: AnswerFormat) -> tuple[str, Answer]:
    """(request, answer) from a synthesis reply: the calls, or a free-form answer's text (`fmt.pair_answer`);
    raises AnswerParseError."""
    match = _PAIR.search(text)
    if not match:
        raise AnswerParseError("no_pair", "reply lacks 'Request:' and 'Answer:' lines")
    query = match.group("query").strip().strip('"').strip()
    if not query:
        raise AnswerParseError("empty_query", "the new request is empty")
    return query, fmt.pair_answer(match.group("answer"))

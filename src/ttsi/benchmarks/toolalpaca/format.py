"""ToolAlpaca's answer format: its ReAct agent prompt, the answer `Action: <name>` / `Action Input: <json>`.

The prompt is the evaluation prompt (`--agent_prompt test_v2`) of tangqiaoyu/ToolAlpaca, commit
189069998d64a7baf1b4a1c3c4b2e75eb9d05532 (Apache-2.0): `prefix_test_v2`, `format_instructions_test_v2` and the
`suffix` that `test_prompt_v2` uses, from `agent/agent_prompts.py`, joined as LangChain's
`ZeroShotAgent.create_prompt` joins them (prefix, one `name: description` line per tool, format instructions,
suffix, separated by blank lines); `agent/get_agent.py` appends the API's "components" text to the last tool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ttsi import jsonio
from ttsi.formats import register_format
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, balanced_end
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Task, Tool

# Verbatim from agent/agent_prompts.py (prefix_test_v2, format_instructions_test_v2, suffix), Apache-2.0.
PREFIX = "Answer the following questions as best you can. You have access to the following tools:"
FORMAT_INSTRUCTIONS = """Use the following format:

Question: the input question you must answer
Thought: you should always think about what to do
Action: the action to take, should be one of [{tool_names}]
Action Input: the input to the action, in JSON format.
Observation: the result of the action
... (this Thought/Action/Action Input/Observation can repeat N times)
Thought: I now know the final answer
Final Answer: the final answer to the original input question"""
SUFFIX = "Begin!\n\nQuestion: {input}\nThought:"  # the agent scratchpad is empty before the first action

# agent/custom_parser.py (CustomMRKLOutputParser); LangChain's ZeroShotAgent stops generating at Observation.
ACTION = re.compile(r"Action\s*\d*\s*:(.*?)\nAction\s*\d*\s*Input\s*\d*\s*:[\s]*(.*)", re.DOTALL)
FINAL_ANSWER = "Final Answer:"
STOPS = ("\nObservation:", "\n\tObservation:")
# The same lines, stopping where the input's JSON object opens (quotes or a ```json fence before it skipped).
_NEXT_ACTION = re.compile(r"Action\s*\d*\s*:(.*?)\nAction\s*\d*\s*Input\s*\d*\s*:[\s\"`]*(?:json\s*)?",
                          re.DOTALL)


def tool_line(tool: Tool) -> str:
    """`name: description` as the agent lists a tool (the last one carries the API's "components" text)."""
    if tool.raw is not None and isinstance(tool.raw.get("description"), str):
        return f"{tool.name}: {tool.raw['description']}{tool.raw.get('components', '')}"
    params = {k: v.get("description", v.get("type", "")) if isinstance(v, dict) else "" for k, v in
              tool.properties.items()}
    return f"{tool.name}: {tool.description}\nParameters: {json.dumps(params, ensure_ascii=False)}"


def before_stop(text: str) -> str:
    """The output up to the agent's stop sequence: what the official parser would have seen."""
    for stop in STOPS:
        text = text.split(stop, 1)[0]
    return text


def official_action(text: str) -> tuple[str, str]:
    """(action, action input text) as CustomMRKLOutputParser reads them; raises AnswerParseError."""
    text = before_stop(text)
    if FINAL_ANSWER in text:
        raise AnswerParseError("final_answer", "the output gives a Final Answer instead of an action")
    match = ACTION.search(text)
    if match is None:
        raise AnswerParseError("no_action", "no 'Action:' line followed by an 'Action Input:' line")
    return match.group(1).strip(), match.group(2).strip(" ").strip('"')


def action_input(text: str) -> Any:
    """The JSON value of an action input, read like utils.py's parse_json_string (first opening bracket to
    last closing one)."""
    starts = [i for i in (text.find("{"), text.find("[")) if i != -1]
    ends = [i for i in (text.rfind("}"), text.rfind("]")) if i != -1]
    if not starts or not ends:
        raise AnswerParseError("malformed_input", "the action input holds no JSON object")
    try:
        return jsonio.parse(text[min(starts): max(ends) + 1])
    except jsonio.BadJSON as e:
        raise AnswerParseError("malformed_input", f"the action input is not valid JSON ({e.msg})") from None


class ToolAlpacaFormat(AnswerFormat):
    """`Action: name` then `Action Input: {json}` on the next line (optionally after a `Thought:` line)."""

    name = "toolalpaca"

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        """ToolAlpaca's agent prompt as one user turn. With demonstrations, the full prompt opens the first
        user turn and each later turn holds only its `Question: ...` / `Thought:` lines."""
        turns = list(task.messages[:1]) if task.messages and task.messages[0]["role"] == "system" else []
        names = ", ".join(t.name for t in task.tools)
        head = "\n\n".join([PREFIX, "\n".join(tool_line(t) for t in task.tools),
                            FORMAT_INSTRUCTIONS.format(tool_names=names)])
        queries = [*(q for q, _ in demos), task.query]
        for i, query in enumerate(queries):
            suffix = SUFFIX.format(input=query)
            text = f"{head}\n\n{suffix}" if i == 0 else suffix.removeprefix("Begin!\n\n")
            turns.append({"role": "user", "content": text})
            if i < len(demos):
                turns.append({"role": "assistant", "content": demos[i][1]})
        return turns

    def instruction(self) -> str:
        return ('Answer with the first action only, in exactly this form: "Action: function_name" on one '
                'line, then "Action Input: " and its arguments as a JSON object, like {"argument": "value"}.')

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        return "\n".join(f"Action: {c.name}\nAction Input: {json.dumps(c.arguments, ensure_ascii=False)}"
                         for c in calls)

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # Through "Input:": the colon is followed by a space, which always starts a new pre-token (" {"), and
        # the newline closes the name, so `get` and `get_weather` give candidates that are not prefixes.
        return f"Action: {name}\nAction Input:"

    def parse(self, text: str) -> list[Call]:
        text = before_stop(text)
        if FINAL_ANSWER in text:
            raise AnswerParseError("final_answer", "the output gives a Final Answer instead of an action")
        calls, pos = [], 0
        while (span := self._action(text, pos)) is not None:
            name, start, end = span
            try:
                value = jsonio.parse(text[start: end + 1])
            except jsonio.BadJSON as e:
                raise AnswerParseError("malformed_input",
                                       f"the input of {name} is not valid JSON ({e.msg})") from None
            calls.append(Call(name, value))
            pos = end + 1
        if not calls:
            official_action(text)  # raises the official parser's reason
            raise AnswerParseError("malformed_input", "the action input holds no JSON object")
        return calls

    def first_call(self, text: str) -> str | None:
        span = self._action(text, 0)
        return None if span is None else text[: boundary_at_or_after(text, span[2] + 1)]

    @staticmethod
    def _action(text: str, pos: int) -> tuple[str, int, int] | None:
        """(name, start, end) of the next action whose input is a complete JSON object (end: its "}")."""
        match = _NEXT_ACTION.search(text, pos)
        if match is None or not text.startswith("{", match.end()):
            return None
        end = balanced_end(text, match.end())
        return None if end is None else (match.group(1).strip(), match.end(), end)


# `get_format(NAME)` imports this module the first time a task names the format.
register_format(ToolAlpacaFormat())

"""Answer formats, registered by name; a task names the one it uses (`"format": "json"`)."""

from __future__ import annotations

from ttsi.errors import TaskError
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, tools_block
from ttsi.formats.json_calls import JsonCalls

FORMATS: dict[str, AnswerFormat] = {}


def register_format(fmt: AnswerFormat) -> AnswerFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> AnswerFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise TaskError(f"unknown answer format {name!r}; known formats: {', '.join(sorted(FORMATS))}") from None


register_format(JsonCalls())

__all__ = ["FORMATS", "AnswerFormat", "AnswerParseError", "JsonCalls", "Messages", "get_format", "register_format",
           "tools_block"]

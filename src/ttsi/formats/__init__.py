"""Answer formats, registered by name; a task names the one it uses (`"format": "json"`)."""

from __future__ import annotations

from ttsi.errors import TaskError
from ttsi.formats.apibank import APIBankFormat
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, tools_block
from ttsi.formats.bfcl import BFCLFormat
from ttsi.formats.json_calls import JsonCalls
from ttsi.formats.nexusraven import NexusRavenFormat
from ttsi.formats.sealtools import SealToolsFormat
from ttsi.formats.toolalpaca import ToolAlpacaFormat

FORMATS: dict[str, AnswerFormat] = {}


def register_format(fmt: AnswerFormat) -> AnswerFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> AnswerFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise TaskError(f"unknown answer format {name!r}; known formats: {', '.join(sorted(FORMATS))}") from None


for _fmt in (JsonCalls(), SealToolsFormat(), BFCLFormat(), NexusRavenFormat(), ToolAlpacaFormat(), APIBankFormat()):
    register_format(_fmt)

__all__ = ["FORMATS", "AnswerFormat", "AnswerParseError", "JsonCalls", "Messages", "get_format", "register_format",
           "tools_block"]

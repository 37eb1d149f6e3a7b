"""Answer formats, registered by name; a task names the one it uses (`"format": "json"`).

Native tool-call formats (`hermes`, `llama3_json`, `mistral`, `pythonic`) write a model's own call syntax and give
the tools to its chat template; `detect_tool_parser` names the one a chat template uses.
"""

from __future__ import annotations

from ttsi.errors import TaskError
from ttsi.formats.apibank import APIBankFormat
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, tools_block
from ttsi.formats.bfcl import BFCLFormat
from ttsi.formats.detect import detect_tool_parser, native_format
from ttsi.formats.hermes import HermesCalls
from ttsi.formats.json_calls import JsonCalls
from ttsi.formats.llama3_json import Llama3JsonCalls
from ttsi.formats.mistral import MistralCalls
from ttsi.formats.native import NativeFormat
from ttsi.formats.nexusraven import NexusRavenFormat
from ttsi.formats.pythonic import PythonicCalls
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


for _fmt in (JsonCalls(), SealToolsFormat(), BFCLFormat(), NexusRavenFormat(), ToolAlpacaFormat(), APIBankFormat(),
             HermesCalls(), Llama3JsonCalls(), MistralCalls(), PythonicCalls()):
    register_format(_fmt)

NATIVE_FORMATS = ("hermes", "llama3_json", "mistral", "pythonic")

__all__ = [
    "FORMATS",
    "NATIVE_FORMATS",
    "AnswerFormat",
    "AnswerParseError",
    "HermesCalls",
    "JsonCalls",
    "Llama3JsonCalls",
    "Messages",
    "MistralCalls",
    "NativeFormat",
    "PythonicCalls",
    "detect_tool_parser",
    "get_format",
    "native_format",
    "register_format",
    "tools_block",
]

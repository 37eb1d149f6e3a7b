"""Answer formats, registered by name; a task names the one it uses (`"format": "json"`).

Native tool-call formats (`hermes`, `llama3_json`, `mistral`, `pythonic`) write a model's own call syntax and give
the tools to its chat template; `detect_tool_parser` names the one a chat template uses.
"""

from __future__ import annotations

import importlib

from ttsi.errors import TaskError
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, tools_block
from ttsi.formats.detect import detect_tool_parser, native_format
from ttsi.formats.hermes import HermesCalls
from ttsi.formats.json_calls import JsonCalls
from ttsi.formats.llama3_json import Llama3JsonCalls
from ttsi.formats.mistral import MistralCalls
from ttsi.formats.native import NativeFormat
from ttsi.formats.pythonic import PythonicCalls

# The benchmarks' formats load when a task first names one, so the agent loop never imports a benchmark's code.
BENCHMARK_FORMATS = {"sealtools": "sealtools:SealToolsFormat", "bfcl": "bfcl:BFCLFormat",
                     "nexusraven": "nexusraven:NexusRavenFormat", "toolalpaca": "toolalpaca:ToolAlpacaFormat",
                     "apibank": "apibank:APIBankFormat"}
_REGISTERED: dict[str, AnswerFormat] = {}


def register_format(fmt: AnswerFormat) -> AnswerFormat:
    _REGISTERED[fmt.name] = fmt
    return fmt


def format_names() -> list[str]:
    """Every format a task may name: the registered ones and the benchmarks' (loaded or not)."""
    return sorted(set(_REGISTERED) | set(BENCHMARK_FORMATS))


def get_format(name: str) -> AnswerFormat:
    if name not in _REGISTERED and name in BENCHMARK_FORMATS:
        module, cls = BENCHMARK_FORMATS[name].split(":")
        register_format(getattr(importlib.import_module(f"ttsi.formats.{module}"), cls)())
    try:
        return _REGISTERED[name]
    except KeyError:
        raise TaskError(f"unknown answer format {name!r}; known formats: {', '.join(format_names())}") from None


for _fmt in (JsonCalls(), HermesCalls(), Llama3JsonCalls(), MistralCalls(), PythonicCalls()):
    register_format(_fmt)

NATIVE_FORMATS = ("hermes", "llama3_json", "mistral", "pythonic")

__all__ = [
    "BENCHMARK_FORMATS",
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
    "format_names",
    "get_format",
    "native_format",
    "register_format",
    "tools_block",
]

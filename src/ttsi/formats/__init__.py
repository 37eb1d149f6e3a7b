"""Answer formats, registered by name; a task names the one it uses (`"format": "json"`).

This package is the core: the interface (`base`), the default JSON calls and the native tool-call formats
(`hermes`, `llama3_json`, `mistral`, `pythonic`), which write a model's own call syntax and give the tools to its
chat template (`detect_tool_parser` names the one a chat template uses), and the free-form formats of tasks
without tools (`free_form`: `math`, a worked solution ending in `#### N`; `qa`, a short answer). A benchmark that
brings its own format keeps it in its folder, `ttsi/benchmarks/<name>/format.py`, registered under the benchmark's
name: it is found there without importing anything, and imported when a task first names it, so the agent loop
never loads a benchmark's code.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil

from ttsi.errors import TaskError
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, tools_block
from ttsi.formats.detect import detect_tool_parser, native_format
from ttsi.formats.free_form import FreeForm, MathSolution, ShortAnswer
from ttsi.formats.hermes import HermesCalls
from ttsi.formats.json_calls import JsonCalls
from ttsi.formats.llama3_json import Llama3JsonCalls
from ttsi.formats.mistral import MistralCalls
from ttsi.formats.native import NativeFormat
from ttsi.formats.pythonic import PythonicCalls

_REGISTERED: dict[str, AnswerFormat] = {}
BENCHMARKS_PACKAGE = "ttsi.benchmarks"  # where a benchmark's own format lives: <package>.<name>.format


def register_format(fmt: AnswerFormat) -> AnswerFormat:
    _REGISTERED[fmt.name] = fmt
    return fmt


def benchmark_formats() -> list[str]:
    """The benchmarks that bring their own answer format (a `format` module in their folder), read off the disk:
    no benchmark is imported. Each registers its format under its own name when first imported."""
    folders = importlib.util.find_spec(BENCHMARKS_PACKAGE).submodule_search_locations  # imports `ttsi` only
    return sorted(bench.name for bench in pkgutil.iter_modules(folders) if bench.ispkg and any(
        module.name == "format"
        for module in pkgutil.iter_modules([os.path.join(bench.module_finder.path, bench.name)])))


def format_names() -> list[str]:
    """Every format a task may name: the registered ones and the benchmarks' (loaded or not)."""
    return sorted(set(_REGISTERED) | set(benchmark_formats()))


def get_format(name: str) -> AnswerFormat:
    if name not in _REGISTERED and name in benchmark_formats():
        importlib.import_module(f"{BENCHMARKS_PACKAGE}.{name}.format")  # registers it
    try:
        return _REGISTERED[name]
    except KeyError:
        raise TaskError(f"unknown answer format {name!r}; known formats: {', '.join(format_names())}") from None


for _fmt in (JsonCalls(), HermesCalls(), Llama3JsonCalls(), MistralCalls(), PythonicCalls(), MathSolution(),
             ShortAnswer()):
    register_format(_fmt)

NATIVE_FORMATS = ("hermes", "llama3_json", "mistral", "pythonic")

__all__ = [
    "NATIVE_FORMATS",
    "AnswerFormat",
    "AnswerParseError",
    "FreeForm",
    "HermesCalls",
    "JsonCalls",
    "Llama3JsonCalls",
    "MathSolution",
    "Messages",
    "MistralCalls",
    "NativeFormat",
    "PythonicCalls",
    "ShortAnswer",
    "benchmark_formats",
    "detect_tool_parser",
    "format_names",
    "get_format",
    "native_format",
    "register_format",
    "tools_block",
]

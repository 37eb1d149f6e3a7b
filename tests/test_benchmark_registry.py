"""Benchmarks and their answer formats are found by name, with no list to edit: one folder per benchmark.

`tests/test_architecture.py` checks, in a fresh process, that finding them imports no benchmark until one is named.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ttsi.benchmarks
from ttsi import formats
from ttsi.benchmarks import all_benchmarks, benchmark_names, get_benchmark, parse_spec
from ttsi.benchmarks.base import BENCHMARKS
from ttsi.cli import app
from ttsi.errors import TaskError
from ttsi.formats import JsonCalls, benchmark_formats, format_names, get_format
from ttsi.task import Call

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "src" / "ttsi" / "benchmarks"
NAMES = ["apibank", "arithshift", "bfcl", "gsm8k", "nexusraven", "nq_open", "sealshift", "sealtools", "toolalpaca",
         "toy"]
OWN_FORMATS = ["apibank", "bfcl", "nexusraven", "sealtools", "toolalpaca"]
CORE_FORMATS = {"json", "hermes", "llama3_json", "mistral", "pythonic", "math", "qa"}


def test_every_benchmark_folder_is_a_benchmark_of_its_name():
    assert sorted(p.parent.name for p in FOLDER.glob("*/__init__.py")) == NAMES == benchmark_names()
    for name in NAMES:
        bench = get_benchmark(name)
        assert bench.name == name and type(bench).__module__ == f"ttsi.benchmarks.{name}"
        assert bench.default_split in bench.splits and bench.license
    assert list(all_benchmarks()) == NAMES and all(all_benchmarks()[n] is get_benchmark(n) for n in NAMES)


def test_a_benchmarks_own_format_is_found_in_its_folder_under_its_name():
    assert sorted(p.parent.name for p in FOLDER.glob("*/format.py")) == OWN_FORMATS == benchmark_formats()
    assert set(format_names()) >= CORE_FORMATS | set(OWN_FORMATS)
    for name in OWN_FORMATS:
        fmt = get_format(name)
        assert fmt.name == name and type(fmt).__module__ == f"ttsi.benchmarks.{name}.format"
    for name in format_names():  # every name listed resolves to a format of that name
        assert get_format(name).name == name


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(TaskError) as e:
        get_format("nope")
    assert str(e.value) == f"unknown answer format 'nope'; known formats: {', '.join(format_names())}"
    with pytest.raises(TaskError, match="unknown answer format 'sealshift'"):  # it answers in JSON calls
        get_format("sealshift")
    with pytest.raises(TaskError) as e:
        get_benchmark("nope")
    assert str(e.value) == f"unknown benchmark 'nope'; known: {', '.join(NAMES)}"
    with pytest.raises(TaskError, match="unknown benchmark 'base'"):  # the interface's module is not one
        get_benchmark("base")


def _readme_example() -> dict[str, str]:
    """The files of the README's "Adding a benchmark" example, by path (each block's first line names it)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Adding a benchmark\n"):]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n# (\S+)\n(.*?)```", section, flags=re.S)
    return {path: code for path, code in blocks}


@pytest.fixture
def installed_example(tmp_path):
    """The README's example written into a folder the benchmarks package searches, then removed from it."""
    files = _readme_example()
    assert sorted(files) == ["src/ttsi/benchmarks/mybench/__init__.py", "src/ttsi/benchmarks/mybench/format.py"]
    for path, code in files.items():
        target = tmp_path / "pkg" / Path(path).relative_to("src/ttsi/benchmarks")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    ttsi.benchmarks.__path__.append(str(tmp_path / "pkg"))  # the package's own search list, as a folder in it
    importlib.invalidate_caches()
    try:
        yield tmp_path
    finally:
        ttsi.benchmarks.__path__.remove(str(tmp_path / "pkg"))
        BENCHMARKS.pop("mybench", None)
        formats._REGISTERED.pop("mybench", None)
        for module in [m for m in sys.modules if m.startswith("ttsi.benchmarks.mybench")]:
            del sys.modules[module]


def test_the_readme_example_is_a_benchmark_once_its_folder_exists(installed_example):
    assert "ttsi.benchmarks.mybench" not in sys.modules
    assert "mybench" in benchmark_names() and "mybench" in benchmark_formats() and "mybench" in format_names()
    assert "ttsi.benchmarks.mybench" not in sys.modules  # found, not loaded
    data = installed_example / "data"
    (data / "mybench").mkdir(parents=True)
    tool = {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    rows = [{"id": f"q{i}", "query": f"Weather in {city}?", "tools": [tool],
             "answer": [{"name": "get_weather", "arguments": {"city": city}}]}
            for i, city in enumerate(["Oslo", "Lima"])]
    (data / "mybench" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    bench, split = parse_spec("mybench")
    assert (bench.name, split) == ("mybench", "test") and bench is get_benchmark("mybench")
    tasks = bench.load(data, split)
    assert [(t.id, t.format, t.answer) for t in tasks] == [(r["id"], "mybench", [Call("get_weather", {"city": c})])
                                                           for r, c in zip(rows, ["Oslo", "Lima"], strict=True)]
    fmt = get_format("mybench")
    assert isinstance(fmt, JsonCalls) and fmt.name == "mybench" and fmt.instruction() in str(fmt.messages(tasks[0]))
    assert bench.score(tasks[0], fmt.render(tasks[0].answer)).correct
    assert bench.score(tasks[0], fmt.render(tasks[1].answer)).reason == "wrong_value"
    assert bench.score(tasks[0], "no idea").reason == "parse_error"
    listed = CliRunner().invoke(app, ["benchmarks"])
    assert listed.exit_code == 0 and "mybench: test  [CC-BY-4.0]" in listed.output

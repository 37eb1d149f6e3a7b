"""Benchmarks registered by name: `get_benchmark("sealtools")`, or `"sealtools:test_out_domain"` specs.

A benchmark is one folder here, `ttsi/benchmarks/<name>/`: its loader and scorer (a `Benchmark` subclass decorated
with `@register`, in `__init__.py`) and, where it has its own, its answer format (`format.py`, registered under the
benchmark's name with `ttsi.formats.register_format`). No list names them: the registry finds the folders (and any
single-module benchmark) with `pkgutil` and imports one the first time it is asked for by name, so loading one
benchmark loads no other.
"""

from __future__ import annotations

import importlib
import pkgutil

from ttsi.benchmarks.base import BENCHMARKS as _LOADED
from ttsi.benchmarks.base import (
    REASONS,
    Benchmark,
    ItemScore,
    compare_calls,
    exact_match,
    read_json,
    read_jsonl,
    register,
    require,
    resolve_data_dir,
)
from ttsi.errors import TaskError

_NOT_BENCHMARKS = frozenset({"base"})  # the interface's module, beside the benchmarks


def benchmark_names() -> list[str]:
    """Every benchmark's name, loaded or not: the folders and modules of this package, and any registered elsewhere."""
    found = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_BENCHMARKS and m.name[0] != "_"}
    return sorted(found | set(_LOADED))


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as `name`, its module imported the first time it is asked for."""
    if name not in _LOADED and name in benchmark_names():
        importlib.import_module(f"{__name__}.{name}")  # its `@register` adds it
    try:
        return _LOADED[name]
    except KeyError:
        raise TaskError(f"unknown benchmark {name!r}; known: {', '.join(benchmark_names())}") from None


def all_benchmarks() -> dict[str, Benchmark]:
    """Every benchmark by name, each one's module imported (`ttsi benchmarks` lists them)."""
    return {name: get_benchmark(name) for name in benchmark_names()}


def parse_spec(spec: str) -> tuple[Benchmark, str]:
    """`name[:split]` -> (benchmark, split), the split checked against the benchmark's own."""
    name, _, split = spec.partition(":")
    bench = get_benchmark(name)
    split = split or bench.default_split
    if split not in bench.splits:
        raise TaskError(f"benchmark {name} has no split {split!r}; its splits: {', '.join(bench.splits)}")
    return bench, split


__all__ = ["REASONS", "Benchmark", "ItemScore", "all_benchmarks", "benchmark_names", "compare_calls", "exact_match",
           "get_benchmark", "parse_spec", "read_json", "read_jsonl", "register", "require", "resolve_data_dir"]

"""Benchmarks registered by name: `get_benchmark("sealtools")`, or `"sealtools:test_out_domain"` specs."""

from __future__ import annotations

from ttsi.benchmarks import apibank, bfcl, nexusraven, sealshift, sealtools, toolalpaca, toy  # noqa: F401  (register)
from ttsi.benchmarks.base import (
    BENCHMARKS,
    REASONS,
    Benchmark,
    ItemScore,
    compare_calls,
    read_json,
    read_jsonl,
    register,
    require,
    resolve_data_dir,
)
from ttsi.errors import TaskError


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise TaskError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


def parse_spec(spec: str) -> tuple[Benchmark, str]:
    """`name[:split]` -> (benchmark, split), the split checked against the benchmark's own."""
    name, _, split = spec.partition(":")
    bench = get_benchmark(name)
    split = split or bench.default_split
    if split not in bench.splits:
        raise TaskError(f"benchmark {name} has no split {split!r}; its splits: {', '.join(bench.splits)}")
    return bench, split


__all__ = ["BENCHMARKS", "REASONS", "Benchmark", "ItemScore", "compare_calls", "get_benchmark", "parse_spec",
           "read_json",
           "read_jsonl", "register", "require", "resolve_data_dir"]

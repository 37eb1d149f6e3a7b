"""Imports point one way: CLI / server / evaluation -> agent -> stages -> engine / model (an AST walk of src/ttsi).

Every `ttsi` import counts, including the ones inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ttsi"

# What each layer may not import. Names are module prefixes under `ttsi.`.
TOP = ("cli", "cli_common", "cli_eval", "cli_serve", "demo")
LAYERS = {
    "the engine": (("engine.",), (*TOP, "serve", "evaluation", "agent", "awareness", "augment", "learn", "teacher",
                                  "calibrate", "prompts", "benchmarks", "formats")),
    "the model backend": (("model",), (*TOP, "serve", "evaluation", "agent", "awareness", "augment", "learn",
                                       "teacher", "calibrate", "prompts", "benchmarks", "formats")),
    "the stages": (("awareness", "augment", "learn", "teacher", "calibrate", "prompts"),
                   (*TOP, "serve", "evaluation", "agent", "benchmarks")),
    "the agent loop": (("agent",), (*TOP, "serve", "evaluation", "benchmarks")),
    "the server": (("serve.",), (*TOP, "evaluation", "benchmarks")),
    "the evaluation": (("evaluation.",), (*TOP, "serve")),
    "answer formats and tasks": (("formats.", "task", "schema", "jsonschema", "jsonio"),
                                 (*TOP, "serve", "evaluation", "agent", "awareness", "augment", "learn", "teacher",
                                  "calibrate", "prompts", "benchmarks", "model", "engine")),
}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ttsi":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("ttsi."):
                found.add(node.module.removeprefix("ttsi."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("ttsi.") for a in node.names if a.name.startswith("ttsi.")}
    return found


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p.rstrip(".") or module.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


MODULES = {_module(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_nothing_above_it(layer):
    members, forbidden = LAYERS[layer]
    wrong = sorted(f"{module} imports ttsi.{target}" for module, targets in MODULES.items()
                   if _matches(module, members) for target in targets if _matches(target, forbidden))
    assert not wrong, f"{layer}: " + "; ".join(wrong)


def test_every_layer_has_members():
    """A rename that empties a layer would make its rule pass vacuously."""
    for layer, (members, _) in LAYERS.items():
        assert any(_matches(m, members) for m in MODULES), layer


def test_the_walk_sees_imports_inside_functions():
    assert "formats" in MODULES["cli"] and "agent" in MODULES["cli"]  # both only inside `respond`


@pytest.mark.subprocess
def test_the_agent_loop_loads_no_benchmark():
    """Importing the loop (and answering in the default or a native format) imports no benchmark's code; naming a
    benchmark's format loads it then."""
    code = ("import sys, ttsi.agent, ttsi.serve.app; from ttsi.formats import get_format; get_format('hermes'); "
            "print(sorted(m for m in sys.modules if m.startswith(('ttsi.benchmarks', 'ttsi.evaluation')) "
            "or m in BENCH)); get_format('bfcl'); print('ttsi.formats.bfcl' in sys.modules)")
    prelude = "BENCH = {" + ", ".join(f"'ttsi.formats.{m}'" for m in FORMAT_MODULES) + "}; "
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True,
                         env=os.environ | {"HF_HUB_OFFLINE": "1"}).stdout.split("\n")
    assert out[:2] == ["[]", "True"], out


FORMAT_MODULES = ("sealtools", "bfcl", "nexusraven", "toolalpaca", "apibank")

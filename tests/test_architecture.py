"""Imports point one way: CLI / server / evaluation -> agent -> stages -> engine / model (an AST walk of src/ttsi).

Every `ttsi` import counts, including the ones inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import json
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
    # The trace names the stages' types for type checking only (no torch at run time: see the subprocess test).
    "the trace": (("trace",), (*TOP, "serve", "evaluation", "agent", "benchmarks", "model")),
    "the embedded model's recipe": (("shift.",), (*TOP, "serve", "evaluation", "agent", "benchmarks")),
    "the server": (("serve.",), (*TOP, "evaluation", "benchmarks")),
    "the evaluation": (("evaluation.",), (*TOP, "serve")),
    "answer formats and tasks": (("formats.", "task", "schema", "jsonschema", "jsonio"),
                                 (*TOP, "serve", "evaluation", "agent", "awareness", "augment", "learn", "teacher",
                                  "calibrate", "prompts", "benchmarks", "model", "engine")),
    "provenance": (("provenance",), (*TOP, "serve", "evaluation", "agent", "trace", "awareness", "augment", "learn",
                                     "teacher", "calibrate", "prompts", "benchmarks", "formats", "model", "engine")),
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


def test_the_walk_and_the_rules_catch_every_import_form(tmp_path):
    """The checker has teeth: every way of importing a ttsi module is seen, and one reaching up is refused."""
    source = tmp_path / "engine_module.py"
    source.write_text("import os\nimport ttsi.serve.app\nfrom ttsi import agent, jsonio\nfrom . import sibling\n"
                      "def f():\n    from ttsi.evaluation.runner import run_eval\n    import ttsi.cli as c\n"
                      "class K:\n    def g(self):\n        from ttsi.formats.json_calls import X\n")
    found = _imports(source)
    assert found == {"serve.app", "agent", "jsonio", "evaluation.runner", "cli", "formats.json_calls"}
    _, forbidden = LAYERS["the engine"]
    assert sorted(t for t in found if _matches(t, forbidden)) == ["agent", "cli", "evaluation.runner",
                                                                  "formats.json_calls", "serve.app"]
    assert not _matches("jsonio", forbidden) and not _matches("agents", ("agent",))  # whole names only


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


@pytest.mark.subprocess
def test_ttsi_score_runs_without_torch(tmp_path):
    """`ttsi score`, the trace and provenance load no torch, transformers or peft: here they cannot be imported."""
    from ttsi.benchmarks import get_benchmark
    from ttsi.formats import get_format

    tasks = get_benchmark("toy").load(None, "seen")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(json.dumps({"id": t.id, "output": get_format("json").render(t.answer)})
                               for t in tasks))
    code = ("import sys; sys.modules.update(dict.fromkeys(('torch', 'transformers', 'peft'))); "
            "import ttsi.trace, ttsi.provenance, ttsi.show; from ttsi.cli import main; main()")
    args = ["score", "--benchmark", "toy:seen", "--predictions", str(preds), "--out", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "accuracy 100.00%" in result.stdout
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == len(tasks)

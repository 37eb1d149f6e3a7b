"""Imports point one way: CLI / server / evaluation -> agent -> stages -> engine / model (an AST walk of src/ttsi).

Every `ttsi` import counts, including the ones inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ttsi"
# A benchmark's own answer format lives in its folder (ttsi/benchmarks/<name>/format.py) and is an answer format.
BENCHMARK_FORMATS = tuple(f"benchmarks.{p.parent.name}.format" for p in sorted(SRC.glob("benchmarks/*/format.py")))

# What each layer may not import. Names are module prefixes under `ttsi.`.
TOP = ("cli", "cli_common", "cli_eval", "cli_reproduce", "cli_serve", "demo")
LAYERS = {
    "the engine": (("engine.",), (*TOP, "serve", "evaluation", "agent", "awareness", "augment", "learn", "teacher",
                                  "calibrate", "prompts", "benchmarks", "formats")),
    "the model backend": (("model",), (*TOP, "serve", "evaluation", "agent", "awareness", "augment", "learn",
                                       "teacher", "calibrate", "prompts", "benchmarks", "formats")),
    "the stages": (("awareness", "augment", "learn", "teacher", "calibrate", "prompts", "token_gate", "measures",
                    "verify"),
                   (*TOP, "serve", "evaluation", "agent", "benchmarks")),
    "the agent loop": (("agent",), (*TOP, "serve", "evaluation", "benchmarks")),
    # The trace names the stages' types for type checking only (no torch at run time: see the subprocess test).
    "the trace": (("trace",), (*TOP, "serve", "evaluation", "agent", "benchmarks", "model")),
    # The embedded settings' derivations and models' training read the shipped splits through their benchmarks.
    "the embedded model's recipe": (("sealshift.", "arithshift."), (*TOP, "serve", "evaluation", "agent")),
    "the server": (("serve.",), (*TOP, "evaluation", "benchmarks")),
    "the evaluation": (("evaluation.",), (*TOP, "serve", "reproduce")),
    # Plans and their executors (local, Ray) run cells through the evaluation; nothing below them imports them.
    "the reproduction": (("reproduce.",), (*TOP, "serve")),
    "the benchmarks": (("benchmarks.",), (*TOP, "serve", "evaluation", "agent", "trace", "awareness", "augment",
                                          "learn", "teacher", "calibrate", "prompts", "model", "engine", "sealshift",
                                          "arithshift")),
    "answer formats and tasks": (("formats.", *BENCHMARK_FORMATS, "task", "schema", "jsonschema", "jsonio", "arith"),
                                 (*TOP, "serve", "evaluation", "agent", "awareness", "augment", "learn", "teacher",
                                  "calibrate", "prompts", "benchmarks", "model", "engine")),
    "provenance": (("provenance",), (*TOP, "serve", "evaluation", "agent", "trace", "awareness", "augment", "learn",
                                     "teacher", "calibrate", "prompts", "benchmarks", "formats", "model", "engine")),
}
# `reproduce/` sits between the front ends and the evaluation: no layer but the front ends imports it.
LAYERS = {name: (members, forbidden if name == "the reproduction" else (*forbidden, "reproduce"))
          for name, (members, forbidden) in LAYERS.items()}


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


def test_the_tiny_model_builders_import_nothing_of_ttsi():
    assert MODULES["tiny_models"] == set()  # tests, the toy model, the recipe and the speed suite all build on it


ROOT = SRC.parents[1]


def _exists(path: str) -> bool:
    """A documented path: relative to src/ttsi, to the repository or (`ttsi/...`) to src/; `<name>` is any folder."""
    pattern = path.replace("<name>", "*").rstrip("/")
    return any(any(base.glob(pattern)) for base in (SRC, ROOT, ROOT / "src"))


def test_the_architecture_page_names_only_paths_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = {t for t in re.findall(r"`([^`\s]+)`", text) if t.endswith((".py", "/")) or "/" in t}
    assert {"benchmarks/<name>/format.py", "sealshift/", "tiny_models.py", "engine/lora.py"} <= paths
    assert sorted(p for p in paths if not _exists(p)) == []


def test_the_readme_package_layout_names_only_what_exists():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Package layout\n\n```\nsrc/ttsi/\n"):]
    lines = block[: block.index("\n```", block.index("src/ttsi/"))].splitlines()[4:]
    missing, folder, seen = [], SRC, set()
    for line in lines:  # the entries: leading names at indent 2 (src/ttsi) or 4 (the folder above them)
        indent = len(line) - len(line.lstrip())
        for token in line.split():
            name = token.rstrip(",")
            if indent not in (2, 4) or not re.fullmatch(r"[\w.]+(\.py|/)", name):
                break
            where = (SRC if indent == 2 else folder) / name
            seen.add(str(where.relative_to(SRC)) + ("/" if name.endswith("/") else ""))
            missing += [] if where.exists() else [str(where.relative_to(SRC))]
            folder = where if indent == 2 and name.endswith("/") else folder
    named = set(re.findall(r"\b\w+\.py\b", "\n".join(lines)))  # every file named in a description too
    missing += sorted(n for n in named if not any(SRC.rglob(n)))
    assert {"sealshift/", "benchmarks/", "benchmarks/sealshift/", "tiny_models.py", "engine/lora.py"} <= seen
    assert missing == []


@pytest.mark.subprocess
def test_the_agent_loop_loads_no_benchmark():
    """Importing the loop (and answering in the default or a native format, or listing every format) imports no
    benchmark's code; naming a benchmark's format loads that benchmark then, and no other."""
    code = ("import sys, ttsi.agent, ttsi.serve.app; from ttsi.formats import format_names, get_format; "
            "loaded = lambda: sorted(m for m in sys.modules if m.startswith(('ttsi.benchmarks', 'ttsi.evaluation'))); "
            "get_format('hermes'); names = format_names(); print(loaded()); print('bfcl' in names); "
            "get_format('bfcl'); print(loaded())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"HF_HUB_OFFLINE": "1"}).stdout.split("\n")
    bfcl = ["ttsi.benchmarks", "ttsi.benchmarks.base", "ttsi.benchmarks.bfcl", "ttsi.benchmarks.bfcl.format"]
    assert out[:3] == ["[]", "True", str(bfcl)], out


def test_the_benchmark_formats_are_the_answer_formats_layer():
    """The rules above see every benchmark's format module (a glob that found none would check nothing)."""
    assert set(BENCHMARK_FORMATS) == {f"benchmarks.{n}.format"
                                      for n in ("apibank", "bfcl", "nexusraven", "sealtools", "toolalpaca")}
    assert all(m in MODULES for m in BENCHMARK_FORMATS)


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

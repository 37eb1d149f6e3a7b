"""NexusRaven API evaluation (v1, 318 queries over 4 domains), scored like `raven/eval/evaluator.py`.

The evaluator (nexusflowai/NexusRaven: evaluator.py read at commit 1658e93f92ac, utils.py at f32882763bb3) reads
the model's raw output with `raven/utils.py::parse_function_call_to_name_and_args` (the whole output parsed as
Python; float keyword values cast to int), calls a stub `def f(<required>, <optional>=<default>): return ("f",
locals())` built by `raven/utils.py::build_functions` with the predicted arguments, and the same stub with the
reference arguments; an item is correct iff the function names and the two full argument bindings are equal (Python
`==`). Here the stub is an `inspect.Signature` (`bind` and `apply_defaults`), never exec.

Scoring modes: "official" (the default) reads the output as the evaluator does (`whole_output_call`); "lenient"
reads the first `name(...)` call anywhere in it (`find_call`: prose, code fences and an "Initial Answer:" prefix
skipped), ttsi's reading before issue 21. Binding and comparison are the official ones in both.
"""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Any

from ttsi.benchmarks.base import (
    Benchmark,
    ItemScore,
    argument_difference,
    read_json,
    read_jsonl,
    register,
    require,
)
from ttsi.benchmarks.nexusraven.format import NexusRavenFormat, find_call, stub_signature, whole_output_call
from ttsi.formats.base import AnswerParseError
from ttsi.task import Call, Task, Tool

FOLDER = "nexusraven"
QUERIES = "nexusraven_standardized_queries.jsonl"
API_LIST = "nexusraven_api_list.json"
DOMAINS = ("cve_cpe", "emailrep", "virustotal", "toolalpaca")
_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
               "dict": "object", "tuple": "array"}


def tool_from_api(spec: dict[str, Any]) -> Tool:
    """One api-list entry as a Tool; types are nullable (the stub checks none, and the gold passes None)."""
    props: dict[str, Any] = {}
    for arg in spec["args_dicts"]:
        prop: dict[str, Any] = {}
        kind = _JSON_TYPES.get(str(arg.get("type")))
        if kind:
            prop["type"] = [kind, "null"]
        description = str(arg.get("description") or "").lstrip(": ").strip()
        if description:
            prop["description"] = description
        props[arg["name"]] = prop
    required = [a["name"] for a in spec["args_dicts"] if a.get("required")]
    schema = {"type": "object", "properties": props, "required": required}
    return Tool(spec["name"], str(spec.get("description", "")).strip(), schema, raw=spec)


def _check_api(specs: Any, path: Path) -> dict[str, dict[str, Any]]:
    require(isinstance(specs, list) and bool(specs), path, "a non-empty JSON list of function specs")
    for i, spec in enumerate(specs):
        expected = (f"entry {i} to be an object with 'name', 'description' and 'args_dicts' (a list of "
                    "objects with 'name', 'type', 'required', 'default')")
        require(isinstance(spec, dict) and isinstance(spec.get("name"), str)
                and isinstance(spec.get("args_dicts"), list), path, expected)
        require(all(isinstance(a, dict) and isinstance(a.get("name"), str) and "required" in a
                    for a in spec["args_dicts"]), path, expected)
    return {spec["name"]: spec for spec in specs}


def _check_row(row: Any, n: int, specs: dict[str, Any], path: Path) -> None:
    require(isinstance(row, dict) and isinstance(row.get("prompt"), str)
            and isinstance(row.get("dataset"), str) and isinstance(row.get("python_args_dict"), dict)
            and isinstance(row.get("context_functions"), list)
            and all(isinstance(f, str) and f in specs for f in row["context_functions"])
            and row.get("python_function_name") in row["context_functions"], path,
            f"line {n} to be an object with 'dataset', 'prompt', 'python_function_name', 'python_args_dict' "
            "(an object) and 'context_functions' (names in the api list, the reference function among them)")


@register
class NexusRaven(Benchmark):
    """NexusRaven's 318 single-call queries (cve_cpe 78, emailrep 38, virustotal 151, toolalpaca 51)."""

    name = "nexusraven"
    splits = ("all",)
    default_split = "all"
    license = "CC-BY-NC-4.0 (evaluation data; non-commercial use only, never copied into this repository)"
    scorings = ("official", "lenient")
    scoring = "official"
    note = ("official (default): as raven/eval/evaluator.py, the whole output is parsed as Python "
            "(raven/utils.py::parse_function_call_to_name_and_args), so prose, a code fence or 'Initial Answer: "
            "... Reflection: ...' around the call is wrong; float keyword values are cast to int and the call is "
            "bound to the stub's signature (defaults filled; unknown or missing arguments wrong). Not applied: "
            "NexusRaven-13B's own agent path (RavenOutputParser reads the second line minus 'Initial Answer: '). "
            "lenient: the first `name(...)` call anywhere in the output is read instead.")

    def load(self, data_dir: Path, split: str) -> list[Task]:
        folder = Path(data_dir) / FOLDER
        api_path, queries_path = folder / API_LIST, folder / QUERIES
        specs = _check_api(read_json(api_path, "the NexusRaven api list (65 function specs)"), api_path)
        rows = read_jsonl(queries_path, "NexusRaven standardized queries, one JSON object per line")
        require(bool(rows), queries_path, "at least one query")
        tasks, seen = [], Counter()
        for n, row in enumerate(rows, 1):
            _check_row(row, n, specs, queries_path)
            domain = row["dataset"]
            index, seen[domain] = seen[domain], seen[domain] + 1
            gold = {"name": row["python_function_name"], "arguments": row["python_args_dict"],
                    "reference_call": row.get("reference_call", "")}
            tasks.append(Task(id=f"{domain}-{index}", messages=[{"role": "user", "content": row["prompt"]}],
                              tools=[tool_from_api(specs[f]) for f in row["context_functions"]],
                              answer=[Call(gold["name"], dict(gold["arguments"]))],
                              format=NexusRavenFormat.name, meta={"domain": domain, "gold": gold}))
        return tasks

    def score(self, task: Task, output: str) -> ItemScore:
        gold = task.meta["gold"]
        try:
            call = find_call(output) if self.scoring == "lenient" else whole_output_call(output)
            # raven/utils.py casts float keyword values (not positional ones) to int before the comparison.
            kwargs = {k: int(v) if isinstance(v, float) else v for k, v in call.kwargs.items()}
        except AnswerParseError as e:
            return _wrong("parse_error", str(e))
        except (OverflowError, ValueError):  # int() of inf or nan, which fails in the official parser too
            return _wrong("parse_error", "a float keyword value that is not finite")
        if call.name != gold["name"]:
            return _wrong("wrong_function", f"{call.name} instead of {gold['name']}")
        tool = task.tool(gold["name"])
        if tool is None:
            return _wrong("wrong_function", f"{gold['name']} is not among the task's tools")
        signature = stub_signature(tool)
        try:
            predicted = _bind(signature, call.args, kwargs)
        except TypeError as e:
            return _wrong(_bind_reason(str(e)), f"{call.name}: {e}", function_match=1.0)
        try:
            reference = _bind(signature, [], gold["arguments"])
        except TypeError as e:  # "gold_malformed": the reference itself does not fit its stub (a data defect)
            return _wrong("gold_malformed", f"reference {gold['name']}: {e}", function_match=1.0)
        if predicted == reference:
            return ItemScore(True, counts={"function_match": 1.0})
        reason, detail = argument_difference(predicted, reference) or ("wrong_value", "arguments differ")
        return _wrong(reason, f"{call.name}.{detail}", function_match=1.0)

    def subsets(self, task: Task) -> list[str]:
        return [task.meta["domain"]]

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        """Accuracy overall and per domain (as NexusRaven reports it), and function-name accuracy."""
        if not scores:
            return {}
        out = {"accuracy": sum(s.correct for s in scores) / len(scores),
               "function_accuracy": sum(s.counts.get("function_match", 0.0) for s in scores) / len(scores)}
        for domain in DOMAINS:
            picked = [s for t, s in zip(tasks, scores, strict=True) if t.meta.get("domain") == domain]
            if picked:
                out[f"accuracy_{domain}"] = sum(s.correct for s in picked) / len(picked)
        return out


def _wrong(reason: str, detail: str, function_match: float = 0.0) -> ItemScore:
    return ItemScore(False, reason, detail, counts={"function_match": function_match})


def _bind(signature: inspect.Signature, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The stub's `locals()`: every parameter, defaults filled in."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _bind_reason(message: str) -> str:
    if "missing" in message:
        return "missing_argument"
    return "unexpected_argument"  # an unknown keyword, too many positional values, or an argument given twice

"""API-Bank (Li et al., EMNLP 2023): level-1 "Call" and level-2 "Retrieve+Call" API requests, scored offline.

Data: `api-bank/test-data/level-{1,2}-api.json` of AlibabaResearch/DAMO-ConvAI at commit 1d76900 (Apache-2.0);
see SCORING.md section 7. The official evaluator (`api-bank/evaluator_by_json.py`) reads the predicted call
with `api_call_extraction.py`, requires the gold API name, then EXECUTES the call on API-Bank's simulated APIs
and asks the API's `check_api_call_correctness` whether the result matches the gold's. Without the API code
and databases the call is compared instead, as SCORING.md describes: same API name, same parameter dict.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from ttsi.benchmarks.apibank.format import CALL, GENERATE, PROMPT_HEAD, APIBankFormat, official_call, official_params
from ttsi.benchmarks.base import Benchmark, ItemScore, read_json, register, require
from ttsi.errors import TaskError
from ttsi.task import Call, Task, Tool

FOLDER = "api_bank"
FILES = {"level-1": "level-1-api.json", "level-2": "level-2-api.json"}
TOOL_SEARCHER = "ToolSearcher"
COUNTS = ("calls", "parsed", "api_name_correct", "correct")
_ITEM = "a JSON list of {'file', 'id', 'instruction', 'input', 'expected_output'} objects"
# A ToolSearcher result in the dialogue: `API-Request: [ToolSearcher(keywords='...')]->{...}` (or a list).
_RETRIEVED = re.compile(r"\[ToolSearcher\(.*?\)\]->(.*)")
# API-Bank lists no required parameters. Its Python APIs take every described parameter without a default, so
# the official executor fails on an omitted one ("missing required positional argument"), except where the
# description says so: "[Optional] ... Default is ..." (Translate), "Only needed for the first call"
# (ForgotPassword).
_OPTIONAL = re.compile(r"\[optional\]|\bonly needed\b", re.IGNORECASE)
# A gold value runs to the quote that ends the parameter list or precedes the next `, key=`: this reads list
# literals whole (`attendees='['Ann', 'Bo']'`), which the official regex cuts to '['.
_GOLD_PARAM = re.compile(r"(\w+)\s*=\s*'(.*?)'\s*(?=,\s*\w+\s*=|$)")


@register
class APIBank(Benchmark):
    """API-Bank API-call items: level-1 gives the APIs' descriptions, level-2 only ToolSearcher's."""

    name = "apibank"
    splits = ("level-1", "level-2")
    default_split = "level-1"
    license = "Apache-2.0"
    note = ("Offline reimplementation (SCORING.md 7): the official evaluator executes the call on API-Bank's "
            "simulated APIs; here the first [ApiName(...)] is read with the official regexes and is correct "
            "when its API name equals the gold's and its parameter dict equals the gold's after the official "
            "executor's type conversion (int: int(), float: float(), bool: == 'True', list / list(str): "
            "json.loads after ' -> \"; strings compared exactly). Stricter than the official check for the "
            "lenient APIs (e.g. AddAgenda / ModifyAgenda's content Jaccard > 0.5, QueryStock's code and date "
            "normalisation, TimedSwitch's name case and time format, ToolSearcher judged by the API its "
            "keywords retrieve, not the keywords) and for a parameter written out with its default value. "
            "Gold list values are read whole, as the official ground truth (the dialogue files) holds them. "
            "8 level-1 golds pass TimedSwitch / CancelTimedSwitch a `device_id` the API does not take "
            "(officially no prediction passes them); here a prediction equal to the gold does.")

    def load(self, data_dir: Path, split: str) -> list[Task]:
        if split not in self.splits:
            raise TaskError(f"API-Bank has no split {split!r}; its splits: {', '.join(self.splits)}")
        path = Path(data_dir) / FOLDER / FILES[split]
        items = read_json(path, _ITEM)
        require(isinstance(items, list) and bool(items), path, _ITEM)
        parsed = [_parse_item(item, i, path) for i, item in enumerate(items)]
        catalog: dict[str, dict[str, Any]] = {}  # all descriptions in the file: types for undescribed golds
        for _, tools, _ in parsed:
            for raw in tools:
                catalog.setdefault(raw["name"], raw)
        tasks = [_task(item, tools, gold, split, catalog) for item, tools, gold in parsed]
        require(len({t.id for t in tasks}) == len(tasks), path, "unique (file, id) pairs")
        return tasks

    def score(self, task: Task, output: str) -> ItemScore:
        gold = task.meta["gold"]
        counts = dict.fromkeys(COUNTS, 0) | {"calls": 1}
        found = official_call(output)
        if found is None:
            return ItemScore(False, "parse_error", "no [ApiName(...)] in the output (official NO_API_CALL)",
                             counts)
        counts["parsed"] = 1
        name, params = found
        if name != gold["api_name"]:
            return ItemScore(False, "wrong_function", f"calls {name}, gold {gold['api_name']}", counts)
        counts["api_name_correct"] = 1
        reason, detail = compare_params(params, gold["param_dict"], gold["types"])
        counts["correct"] = int(reason is None)
        return ItemScore(reason is None, reason, detail, counts)

    def subsets(self, task: Task) -> list[str]:
        subsets = []
        if task.meta["split"] == "level-2":
            gold_api = task.meta["gold"]["api_name"]
            subsets.append("toolsearcher" if gold_api == TOOL_SEARCHER else "found_api")
        if not task.meta["gold_api_shown"]:
            subsets.append("gold_api_not_shown")
        return subsets

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        if not scores:
            return {}
        total = {k: sum(s.counts.get(k, 0) for s in scores) for k in COUNTS}
        # accuracy: the official "correct API calls / total API calls"; the name rate is ours
        return {"accuracy": total["correct"] / total["calls"],
                "api_name_accuracy": total["api_name_correct"] / total["calls"]}


def executor_value(value: str, kind: str | None) -> Any:
    """A parameter as the official `ToolManager.api_call` converts it; ValueError where it would fail."""
    if kind == "int":
        if not value.isdigit():
            raise ValueError("not an integer")
        return int(value)
    if kind == "float":
        if not value.replace(".", "", 1).isdigit():
            raise ValueError("not a number")
        return float(value)
    if kind == "bool":
        return value == "True"
    if kind in ("list", "list(str)"):
        return json.loads(value.replace("'", '"'))  # JSONDecodeError is a ValueError
    return value  # str (and any other declared type: compared as written)


def compare_params(pred: dict[str, str], gold: dict[str, str],
                   types: dict[str, str]) -> tuple[str | None, str]:
    """(None, "") when the parameter dicts are equal after the executor's conversion, else (reason, detail).

    Checked in the official executor's order: unknown names and unconvertible values (while the predicted
    arguments are read), then missing ones (when the API is called), then the values.
    """
    for key, value in pred.items():
        if key not in gold:
            return "unexpected_argument", f"{key}={value!r} is not in the gold call"
        try:
            executor_value(value, types.get(key))
        except ValueError:
            return "wrong_type", f"{key}={value!r} is not a valid {types.get(key)}"
    missing = [k for k in gold if k not in pred]
    if missing:
        return "missing_argument", f"lacks {', '.join(missing)}"
    for key, want in gold.items():
        got = executor_value(pred[key], types.get(key))
        try:
            want_value = executor_value(want, types.get(key))
        except ValueError:
            want_value = want
        if got != want_value:
            return "wrong_value", f"{key}={pred[key]!r}, gold {want!r}"
    return None, ""


def gold_params(body: str) -> dict[str, str]:
    """The gold's parameters, each value whole; the official reading where the gold is not `k='v', ...`."""
    matches = list(_GOLD_PARAM.finditer(body))
    if ", ".join(m.group(0).strip() for m in matches) == body.strip():
        return {m.group(1): m.group(2) for m in matches}
    return official_params(body)


def _is_list(value: str) -> bool:
    try:
        return isinstance(executor_value(value, "list"), list)
    except ValueError:
        return False


def _tool(raw: dict[str, Any]) -> Tool:
    """A tool from an API-Bank description; every value a string, as the official extraction reads it."""
    params = raw["input_parameters"]
    props = {p: {"type": "string", "description": str(spec.get("description", ""))}
             for p, spec in params.items()}
    required = [p for p, spec in params.items() if not _OPTIONAL.search(str(spec.get("description", "")))]
    schema = {"type": "object", "properties": props, "required": required}
    return Tool(raw["name"], str(raw.get("description", "")), schema, raw=raw)


def _is_description(raw: Any) -> bool:
    return (isinstance(raw, dict) and isinstance(raw.get("name"), str) and bool(raw["name"])
            and isinstance(raw.get("input_parameters"), dict)
            and all(isinstance(spec, dict) for spec in raw["input_parameters"].values()))


def _parse_item(item: Any, index: int,
                path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], tuple[str, str]]:
    """(item, API descriptions: listed then retrieved, (gold name, gold body)), checking every field."""
    where = f"item {index}"
    require(isinstance(item, dict) and isinstance(item.get("file"), str)
            and isinstance(item.get("id"), (int, str))
            and all(isinstance(item.get(k), str) for k in ("instruction", "input", "expected_output")), path,
            f"{where} to be an object with 'file', 'id', 'instruction', 'input' and 'expected_output'")
    where = f"item {index} ({item['file']} #{item['id']})"
    instruction, dialogue = item["instruction"], item["input"]
    require(instruction.startswith(PROMPT_HEAD), path,
            f"{where}'s instruction to start with API-Bank's prompt head")
    listed = []
    for line in instruction[len(PROMPT_HEAD):].split("\n"):
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            raise TaskError(f"malformed data file {path}: {where}'s API descriptions are not JSON lines") \
                from None
        require(_is_description(raw), path,
                f"{where}'s API descriptions to have 'name' and 'input_parameters'")
        listed.append(raw)
    require(dialogue.endswith(f"\n{GENERATE}\n"), path, f"{where}'s input to end with '{GENERATE}'")
    retrieved = []
    for match in _RETRIEVED.finditer(dialogue):
        try:
            found = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise TaskError(f"malformed data file {path}: {where}'s ToolSearcher result is not a Python "
                            "literal") from None
        found = found if isinstance(found, list) else [found]
        require(all(_is_description(r) for r in found), path,
                f"{where}'s ToolSearcher results to be API dicts")
        retrieved += found
    gold = CALL.fullmatch(item["expected_output"].strip().removeprefix("API-Request: "))
    if gold is None:
        raise TaskError(f"malformed data file {path}: expected {where}'s expected_output to be "
                        "API-Request: [ApiName(key='value', ...)]")
    return item, listed + retrieved, (gold.group(1), gold.group(2))


def _task(item: dict[str, Any], raws: list[dict[str, Any]], gold: tuple[str, str], split: str,
          catalog: dict[str, dict[str, Any]]) -> Task:
    tools: dict[str, Tool] = {}
    for raw in raws:
        tools.setdefault(raw["name"], _tool(raw))
    name, body = gold
    params = gold_params(body)
    described = tools[name].raw if name in tools else catalog.get(name)
    types = {p: str(spec.get("type")) for p, spec in (described or {}).get("input_parameters", {}).items()}
    for key, value in params.items():  # an API described nowhere in the file: a list literal reads as a list
        if key not in types and value.startswith("[") and _is_list(value):
            types[key] = "list"
    stem = item["file"].removesuffix(".jsonl")
    level = re.search(r"level-\d", stem)
    meta = {"gold": {"api_name": name, "param_dict": params, "types": types,
                     "text": item["expected_output"]},
            "split": split, "file": item["file"], "source_id": item["id"],
            "dialogue_level": level.group(0) if level else None, "gold_api_shown": name in tools}
    query = item["input"][: -len(f"\n{GENERATE}\n")]
    return Task(id=f"{stem}-{item['id']}", messages=[{"role": "user", "content": query}],
                tools=list(tools.values()), answer=[Call(name, params)], format=APIBankFormat.name, meta=meta)

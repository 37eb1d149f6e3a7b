"""API-Bank (Li et al., EMNLP 2023): level-1 "Call" and level-2 "Retrieve+Call" API requests, scored offline.

Data: `api-bank/test-data/level-{1,2}-api.json` of AlibabaResearch/DAMO-ConvAI at commit 1d76900 (Apache-2.0);
see SCORING.md section 7. The official evaluator (`api-bank/evaluator_by_json.py`) reads the predicted call
with `api_call_extraction.py`, requires the gold API name, then EXECUTES the call on API-Bank's simulated APIs
and asks the API's `check_api_call_correctness` whether the result matches the gold's.

Scoring modes: "official" (the default) applies the executor's checks and each API's own rule, offline
(`official.py`: the per-API normalisations and leniencies, output equality approximated from the inputs, and the
gold calls the official evaluator itself rejects, reported as `gold_fails_officially`); "lenient" is ttsi's
reading before issue 21, SCORING.md's: same API name, same parameter dict after the executor's type conversion.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from ttsi.benchmarks.apibank.format import CALL, GENERATE, PROMPT_HEAD, APIBankFormat, official_call, official_params
from ttsi.benchmarks.apibank.official import TYPES, convert, gold_failure, official_verdict
from ttsi.benchmarks.base import Benchmark, ItemScore, read_json, register, require
from ttsi.errors import TaskError
from ttsi.task import Call, Task, Tool

FOLDER = "api_bank"
FILES = {"level-1": "level-1-api.json", "level-2": "level-2-api.json"}
TOOL_SEARCHER = "ToolSearcher"
COUNTS = ("calls", "parsed", "api_name_correct", "correct", "gold_fails")
GOLD_FAILS = "official_gold_fails"  # the subset (and reason) of items whose gold call the official evaluator rejects
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
    scorings = ("official", "lenient")
    scoring = "official"
    note = ("official (default), offline: the first [ApiName(...)] read with the official regexes; the "
            "executor's checks (unknown parameter, type conversion, missing required parameter); then the API's "
            "own check_api_call_correctness rule (whitespace / case / date / code normalisation, content-word "
            "Jaccard > 0.5 for agenda, reminder and meeting topics, time-only for DeleteAgenda / DeleteReminder, "
            "output-only for PlayMusic and the retrieval APIs). Approximated: output equality after execution "
            "(taken from equal normalised inputs; the token where a rule skips it; ToolSearcher, Dictionary, "
            "Wiki, SearchEngine, Translate by their normalised inputs). 26 golds fail officially (subset "
            "official_gold_fails: device_id, DeleteMeeting's KeyError, QueryScene per issue 21, dialogue state "
            "the runner resets); no prediction scores there. lenient: same API name and parameter dict after "
            "the executor's type conversion, strings exact; gold list values read whole.")

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
        failure = task.meta.get("official_gold_failure")
        counts = dict.fromkeys(COUNTS, 0) | {"calls": 1, "gold_fails": int(failure is not None)}
        found = official_call(output)
        if found is None:
            return ItemScore(False, "parse_error", "no [ApiName(...)] in the output (official NO_API_CALL)",
                             counts)
        counts["parsed"] = 1
        name, params = found
        if name != gold["api_name"]:
            return ItemScore(False, "wrong_function", f"calls {name}, gold {gold['api_name']}", counts)
        counts["api_name_correct"] = 1
        if self.scoring == "lenient":
            reason, detail = compare_params(params, gold["param_dict"], gold["types"])
        else:
            reason, detail = official_verdict(name, params, gold["param_dict"], gold["types"],
                                              gold.get("described", True))
            # Where the gold itself fails, a prediction that passes, or that is the gold, fails for the gold's reason
            if failure is not None and (reason is None or compare_params(params, gold["param_dict"],
                                                                          gold["types"])[0] is None):
                reason, detail = "gold_fails_officially", failure
        counts["correct"] = int(reason is None)
        return ItemScore(reason is None, reason, detail, counts)

    def subsets(self, task: Task) -> list[str]:
        subsets = []
        if task.meta["split"] == "level-2":
            gold_api = task.meta["gold"]["api_name"]
            subsets.append("toolsearcher" if gold_api == TOOL_SEARCHER else "found_api")
        if not task.meta["gold_api_shown"]:
            subsets.append("gold_api_not_shown")
        if task.meta.get("official_gold_failure") is not None:
            subsets.append(GOLD_FAILS)
        return subsets

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        if not scores:
            return {}
        total = {k: sum(s.counts.get(k, 0) for s in scores) for k in COUNTS}
        # accuracy: the official "correct API calls / total API calls"; the others are ours: the name rate, the
        # count of calls whose gold the official evaluator rejects, and accuracy over the calls left
        passable = total["calls"] - total["gold_fails"]
        return {"accuracy": total["correct"] / total["calls"],
                "api_name_accuracy": total["api_name_correct"] / total["calls"],
                "gold_fails": total["gold_fails"],
                "accuracy_where_gold_passes": total["correct"] / passable if passable else 0.0}


def executor_value(value: str, kind: str | None) -> Any:
    """A parameter as the official `ToolManager.api_call` converts it; ValueError where it would fail. The lenient
    reading: a declared type the executor has no conversion for is compared as written."""
    return convert(value, kind if kind in TYPES else None)


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
    query = item["input"][: -len(f"\n{GENERATE}\n")]
    failure = gold_failure(name, params, types, described is not None, query, gold_params)
    meta = {"gold": {"api_name": name, "param_dict": params, "types": types, "described": described is not None,
                     "text": item["expected_output"]},
            "split": split, "file": item["file"], "source_id": item["id"],
            "dialogue_level": level.group(0) if level else None, "gold_api_shown": name in tools,
            "official_gold_failure": failure}
    return Task(id=f"{stem}-{item['id']}", messages=[{"role": "user", "content": query}],
                tools=list(tools.values()), answer=[Call(name, params)], format=APIBankFormat.name, meta=meta)

"""Seal-Tools (Wu et al., NLPCC 2024): the fine-tune prompts with their 5 retrieved tools, scored officially.

Official scorer: `LLM_Evaluation/src/llm_tools/evaluation/calculate.py::calculate_score_ToolLearning` in
fairyshine/Seal-Tools (commit ce753ecd60ed08dd376984035de531ab8421f1c6); see SCORING.md section 2.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ttsi.benchmarks.base import Benchmark, ItemScore, argument_difference, read_json, register, require
from ttsi.benchmarks.sealtools.format import PROMPT_HEAD, SealToolsFormat, call_parts, official_parse
from ttsi.errors import TaskError
from ttsi.formats.base import AnswerParseError
from ttsi.task import Call, Task, Tool

FOLDER = "seal_tools"
COUNTS = ("format_ok", "pred_api", "gold_api", "correct_api", "pred_param", "gold_param", "correct_param")
_NESTED = re.compile(r"API_call_\d+")
_ITEM = ("a JSON list of {'id', 'conversations': [{'from': 'human', 'value': prompt}, "
         "{'from': 'gpt', 'value': gold}]}")


@register
class SealTools(Benchmark):
    """Seal-Tools dev / in-domain / out-of-domain test items, each offering the authors' 5 retrieved tools."""

    name = "sealtools"
    splits = ("dev", "test_in_domain", "test_out_domain")
    default_split = "test_out_domain"
    license = "Apache-2.0"
    note = ("Official counts and micro-averaged metrics; differences: list items that are not objects are "
            "skipped (the official script crashes on them), metrics with a zero denominator are 0.0 (the "
            "official omits them), and `accuracy` (per-item exact match of the (api, parameters) multiset, "
            "values compared with str()) is ours: the paper defines no per-item verdict.")

    def load(self, data_dir: Path, split: str) -> list[Task]:
        if split not in self.splits:
            raise TaskError(f"Seal-Tools has no split {split!r}; its splits: {', '.join(self.splits)}")
        path = Path(data_dir) / FOLDER / "dataset_for_finetune" / f"{split}.json"
        items = read_json(path, _ITEM)
        require(isinstance(items, list) and bool(items), path, _ITEM)
        tasks = [_task(item, i, path) for i, item in enumerate(items)]
        require(len({t.id for t in tasks}) == len(tasks), path, "unique ids")
        return tasks

    def score(self, task: Task, output: str) -> ItemScore:
        gold = task.meta["gold"]
        counts = dict.fromkeys(COUNTS, 0)
        counts["gold_api"] = len(gold)
        counts["gold_param"] = sum(len(g["parameters"]) for g in gold)
        try:
            predicted = official_parse(output)
        except AnswerParseError as e:
            return ItemScore(False, "parse_error", str(e), counts)
        counts["format_ok"] = 1
        for item in predicted:
            if isinstance(item, dict) and "api" in item:  # the official loop skips the rest (or crashes)
                _count_call(item, gold, counts)
        reason, detail = _exact(predicted, gold)
        return ItemScore(reason is None, reason, detail, counts)

    def subsets(self, task: Task) -> list[str]:
        return [task.meta["level"], *(["nested"] if task.meta["nested"] else [])]

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        if not scores:
            return {}
        total = {k: sum(s.counts.get(k, 0) for s in scores) for k in COUNTS}
        result = {"accuracy": sum(s.correct for s in scores) / len(scores),
                  "format_acc": total["format_ok"] / len(scores)}
        for unit, kind in (("tool", "api"), ("param", "param")):
            p = _ratio(total[f"correct_{kind}"], total[f"pred_{kind}"])
            r = _ratio(total[f"correct_{kind}"], total[f"gold_{kind}"])
            result |= {f"{unit}_precision": p, f"{unit}_recall": r, f"{unit}_f1": _ratio(2 * p * r, p + r)}
        return result


def _count_call(item: dict[str, Any], gold: list[dict[str, Any]], counts: dict[str, int]) -> None:
    """Add one predicted call to the official counts."""
    params = item.get("parameters")
    params = params if type(params) is dict else {}  # the official counts parameters only when a dict
    counts["pred_api"] += 1
    counts["pred_param"] += len(params)
    match = next((g for g in gold if g["api"] == item["api"]), None)  # the first; gold calls are not consumed
    if match is not None:
        counts["correct_api"] += 1
        target = match["parameters"]
        counts["correct_param"] += sum(k in target and str(v) == str(target[k]) for k, v in params.items())


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _key(api: str, params: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A call as compared for exact match: values by str(), as the official parameter check compares them."""
    return api, tuple(sorted((str(k), str(v)) for k, v in params.items()))


def _exact(predicted: list[Any], gold: list[dict[str, Any]]) -> tuple[str | None, str]:
    """(None, "") when the predicted calls equal the gold's as a multiset, else (reason, detail).

    Reason "malformed_call" (ours) marks a list item that is not {'api': name, 'parameters': {...}}.
    """
    calls = []
    for i, item in enumerate(predicted):
        parts = call_parts(item)
        if parts is None:
            return "malformed_call", f"item {i} is not {{'api': name, 'parameters': {{...}}}}"
        calls.append(parts)
    if len(calls) != len(gold):
        return "wrong_count", f"{len(calls)} calls, gold has {len(gold)}"
    left = Counter(_key(g["api"], g["parameters"]) for g in gold)
    unmatched = []
    for api, params in calls:
        key = _key(api, params)
        if left[key] > 0:
            left[key] -= 1
        else:
            unmatched.append((api, params))
    if not unmatched:
        return None, ""
    api, params = unmatched[0]
    remaining = [g for g in gold if left[_key(g["api"], g["parameters"])] > 0]
    target = next((g["parameters"] for g in remaining if g["api"] == api), None)
    if target is None:
        return "wrong_function", f"calls {api}, which the gold answer does not (or not that often)"
    # values compare as str(), as the official scorer does ("85" and 85 agree)
    reason, detail = argument_difference({k: str(v) for k, v in params.items()},
                                         {k: str(v) for k, v in target.items()}) or ("wrong_value", "")
    return reason, f"{api}: {detail}"


def _task(item: Any, index: int, path: Path) -> Task:
    where = f"item {index}"
    require(isinstance(item, dict) and isinstance(item.get("id"), str) and bool(item["id"]), path,
            f"{where} to be an object with an 'id' string ({_ITEM})")
    where = f"item {item['id']!r}"
    turns = item.get("conversations")
    require(isinstance(turns, list) and len(turns) == 2
            and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns)
            and [t.get("from") for t in turns] == ["human", "gpt"], path,
            f"{where} to have 'conversations': a human turn then a gpt turn, each with a 'value' string")
    raw_tools, query = _split_prompt(turns[0]["value"], path, where)
    tools = [_tool(t, path, where) for t in raw_tools]
    require(len({t.name for t in tools}) == len(tools), path, f"{where} to list distinct api_names")
    gold = _gold(turns[1]["value"], path, where)
    level = "easy" if "-easy-" in item["id"] else "difficult"
    names = {t.name for t in tools}
    meta = {"gold": gold, "gold_text": turns[1]["value"], "level": level,
            "nested": any(_NESTED.search(str(v)) for g in gold for v in g["parameters"].values()),
            "gold_in_api_list": all(g["api"] in names for g in gold)}
    return Task(id=item["id"], messages=[{"role": "user", "content": query}], tools=tools, meta=meta,
                answer=[Call(g["api"], g["parameters"]) for g in gold], format=SealToolsFormat.name)


def _split_prompt(text: str, path: Path, where: str) -> tuple[list[Any], str]:
    """(tool dicts, query) from the fine-tune prompt: head, `api_list = [...]`, `task_instruction = "..."`."""
    opening, closing, middle = "api_list = ", '"\nOutput:\n', '\ntask_instruction = "'
    expected = f"{where}'s human turn to be the Seal-Tools prompt (api_list = [...], task_instruction = ...)"
    well_formed = text.startswith(PROMPT_HEAD + opening) and text.endswith(closing) and middle in text
    require(well_formed, path, expected)
    tools_text, _, rest = text[len(PROMPT_HEAD + opening):].partition(middle)
    try:
        tools = ast.literal_eval(tools_text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise TaskError(f"malformed data file {path}: {where}'s api_list is not a Python literal") from None
    require(isinstance(tools, list), path, f"{where}'s api_list to be a list")
    return tools, rest[: -len(closing)]


def _tool(raw: Any, path: Path, where: str) -> Tool:
    require(isinstance(raw, dict) and isinstance(raw.get("api_name"), str) and bool(raw["api_name"])
            and isinstance(raw.get("parameters"), dict) and isinstance(raw.get("required", []), list)
            and all(isinstance(p, dict) for p in raw["parameters"].values()), path,
            f"{where}'s tools to be dicts with 'api_name', 'parameters' ({{name: {{type, description}}}}) "
            "and 'required'")
    props = {name: {"type": spec.get("type", "str"), "description": str(spec.get("description", ""))}
             for name, spec in raw["parameters"].items()}
    schema = {"type": "object", "properties": props, "required": list(raw.get("required", []))}
    return Tool(raw["api_name"], str(raw.get("api_description", "")), schema, raw=raw)


def _gold(text: str, path: Path, where: str) -> list[dict[str, Any]]:
    """The gold calls as the official scorer holds them: eval() of the gpt turn, round-tripped via JSON."""
    try:
        gold = json.loads(json.dumps(ast.literal_eval(text)))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise TaskError(f"malformed data file {path}: {where}'s gpt turn is not a Python literal") from None
    require(isinstance(gold, list) and all(isinstance(g, dict) and isinstance(g.get("api"), str)
                                           and isinstance(g.get("parameters"), dict) for g in gold), path,
            f"{where}'s gpt turn to be a list of {{'api': name, 'parameters': {{...}}, 'responses': [...]}}")
    return gold

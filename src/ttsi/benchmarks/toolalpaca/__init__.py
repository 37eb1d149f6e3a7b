"""ToolAlpaca's evaluation sets (10 simulated APIs / 100 instructions, 11 real APIs / 114), scored offline.

The official evaluation runs the ReAct agent against live or GPT-simulated APIs and has GPT-4 judge the whole
process and the final response, which cannot be reproduced offline. The scorer here is the offline proxy that
NexusRaven uses for its toolalpaca domain: the FIRST action only, correct iff its name and its JSON-parsed
input equal the first golden action's. The output is read as ToolAlpaca's agent reads it
(`agent/custom_parser.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttsi.benchmarks.base import Benchmark, ItemScore, argument_difference, read_json, register, require
from ttsi.benchmarks.toolalpaca.format import ToolAlpacaFormat, action_input, official_action
from ttsi.formats.base import AnswerParseError
from ttsi.task import Call, Task, Tool

FOLDER = "toolalpaca"
# NexusRaven's raven/data/process_toolalpaca_evaluation_data.py repairs this doubled key in eval_real's gold.
_REPAIRS = (('"symbols": "symbols": ', '"symbols": '),)
_TYPES = ("string", "integer", "number", "boolean", "array", "object")


def parameters_schema(description: str, where: str, path: Path) -> dict[str, Any]:
    """The JSON schema of a function description's `Parameters: {...}` line, whose values read like
    "Required. string. One of: [a, b]. What it is." (enums stay in the description: the gold breaks them)."""
    line = next((ln for ln in description.split("\n") if ln.startswith("Parameters:")), None)
    require(line is not None, path, f"{where} to have a 'Parameters: {{...}}' line")
    try:
        params = json.loads(str(line).removeprefix("Parameters:"))
    except json.JSONDecodeError:
        params = None
    require(isinstance(params, dict), path, f"{where}'s 'Parameters:' line to hold a JSON object")
    props: dict[str, Any] = {}
    required = []
    for name, spec in params.items():
        text = str(spec).strip()
        if text.startswith("Required."):
            required.append(name)
        head = text.removeprefix("Required.").removeprefix("Optional.").strip()
        word = head.split(".")[0].split("[")[0].split("{")[0].strip().lower()
        props[name] = {"type": word, "description": text} if word in _TYPES else {"description": text}
    return {"type": "object", "properties": props, "required": required}


def api_tools(api: dict[str, Any], where: str, path: Path) -> list[Tool]:
    """The API's functions in the agent's order (Function_Projection), the last one carrying "components"."""
    described, projection = api.get("Function_Description"), api.get("Function_Projection")
    require(isinstance(described, dict) and isinstance(projection, dict) and bool(projection), path,
            f"{where} to have 'Function_Description' and 'Function_Projection' objects")
    tools = []
    for i, name in enumerate(projection):
        text = described.get(name)
        require(isinstance(text, str), path, f"{where} to describe {name!r} in 'Function_Description'")
        raw: dict[str, Any] = {"name": name, "description": text}
        if i == len(projection) - 1 and described.get("components"):
            raw["components"] = str(described["components"])
        schema = parameters_schema(text, f"{where} function {name!r}", path)
        tools.append(Tool(name, text.split("\n")[0].strip(), schema, raw=raw))
    return tools


def _gold(steps: Any, where: str, path: Path) -> dict[str, str]:
    require(isinstance(steps, list) and bool(steps) and all(
        isinstance(s, dict) and isinstance(s.get("Action"), str) and isinstance(s.get("Action_Input"), str)
        for s in steps), path, f"{where} to be a non-empty list of {{'Action', 'Action_Input'}} steps")
    first = {"Action": steps[0]["Action"], "Action_Input": steps[0]["Action_Input"]}
    for bad, good in _REPAIRS:
        first["Action_Input"] = first["Action_Input"].replace(bad, good)
    return first


@register
class ToolAlpaca(Benchmark):
    """ToolAlpaca eval sets; one task per instruction, gold = its first golden action."""

    name = "toolalpaca"
    splits = ("simulated", "real")
    default_split = "simulated"
    license = "Apache-2.0 (tangqiaoyu/ToolAlpaca; instances generated with OpenAI models)"
    note = ("Offline proxy, not the official GPT-4 judge of the whole episode: the first action only, "
            "exact match of its name and JSON input with the first golden action (as NexusRaven scores its "
            "toolalpaca domain). eval_real's doubled '\"symbols\": \"symbols\":' gold keys are repaired as "
            "NexusRaven does.")

    def load(self, data_dir: Path, split: str) -> list[Task]:
        path = Path(data_dir) / FOLDER / f"eval_{split}.json"
        apis = read_json(path, f"ToolAlpaca's {split} evaluation set: a JSON list of API objects")
        require(isinstance(apis, list) and bool(apis), path, "a non-empty JSON list of API objects")
        tasks = []
        for a, api in enumerate(apis):
            where = f"API {a}"
            require(isinstance(api, dict) and isinstance(api.get("Name"), str), path,
                    f"{where} to be an object with a 'Name'")
            instructions, answers = api.get("Instructions"), api.get("Golden_Answers")
            require(isinstance(instructions, list) and isinstance(answers, list)
                    and len(instructions) == len(answers) and all(isinstance(i, str) for i in instructions),
                    path, f"{where} to have 'Instructions' (strings) and as many 'Golden_Answers'")
            tools = api_tools(api, where, path)
            for i, (instruction, steps) in enumerate(zip(instructions, answers, strict=True)):
                gold = _gold(steps, f"{where} Golden_Answers[{i}]", path)
                answer, defect = _canonical(gold, tools)
                meta: dict[str, Any] = {"api": api["Name"], "category": api.get("Category", ""),
                                        "split": split, "n_steps": len(steps), "gold": gold,
                                        "golden_answers": steps}
                if defect:
                    meta["gold_defect"] = defect
                tasks.append(Task(id=f"{split}-{a}-{i}", messages=[{"role": "user", "content": instruction}],
                                  tools=tools, answer=answer, format=ToolAlpacaFormat.name, meta=meta))
        return tasks

    def score(self, task: Task, output: str) -> ItemScore:
        gold = task.meta["gold"]
        try:
            name, text = official_action(output)
            value = action_input(text)
        except AnswerParseError as e:
            return _wrong("no_call" if e.reason == "final_answer" else "parse_error", str(e))
        if not isinstance(value, dict):
            return _wrong("parse_error", "'Action Input' cannot be a list (the agent refuses it)")
        if name != gold["Action"]:
            return _wrong("wrong_function", f"{name} instead of {gold['Action']}")
        try:
            want = json.loads(gold["Action_Input"])
        except json.JSONDecodeError:  # "gold_malformed": the golden input is not JSON (a data defect)
            return _wrong("gold_malformed", f"the golden input of {name} is not JSON", action_match=1.0)
        if value == want:
            return ItemScore(True, counts={"action_match": 1.0})
        reason, detail = argument_difference(value, want) or ("wrong_value", "inputs differ")
        return _wrong(reason, f"{name}: {detail}", action_match=1.0)

    def subsets(self, task: Task) -> list[str]:
        return [task.meta["api"]]

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        """Exact first-action accuracy, and the share whose first action names the right function."""
        if not scores:
            return {}
        return {"accuracy": sum(s.correct for s in scores) / len(scores),
                "action_accuracy": sum(s.counts.get("action_match", 0.0) for s in scores) / len(scores)}


def _canonical(gold: dict[str, str], tools: list[Tool]) -> tuple[list[Call] | None, str]:
    """The gold as calls, or None and why it cannot be one (it is still scored exactly as given)."""
    try:
        args = json.loads(gold["Action_Input"])
    except json.JSONDecodeError:
        return None, "the golden action input is not JSON (it holds ${...} placeholders)"
    if not isinstance(args, dict):
        return None, "the golden action input is not a JSON object"
    if gold["Action"] not in {t.name for t in tools}:
        return None, f"the golden action {gold['Action']!r} is not one of the API's functions in the prompt"
    return [Call(gold["Action"], args)], ""


def _wrong(reason: str, detail: str, action_match: float = 0.0) -> ItemScore:
    return ItemScore(False, reason, detail, counts={"action_match": action_match})

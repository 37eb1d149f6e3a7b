"""SealShift: a tool-calling benchmark with a real distribution shift, derived from the Seal-Tools tool catalogue.

Seal-Tools' `tool.jsonl` holds 4,076 real API schemas in 146 top-level fields. A seeded draw holds out whole
fields: the base model is trained only on requests for in-domain tools; the out-of-domain test uses tools of
fields it never saw, so their names, descriptions and parameters are new to it (and to its tokenizer).

Requests are written from each schema by templates (the description, then every required argument with a
value taken from the parameter's own "e.g." examples where it has them), and real Seal-Tools queries are added
where they fit: single-call queries whose tool is in the catalogue and whose values are literal (subset "real").

Splits (written under `src/ttsi/data/sealshift/`, with `PROVENANCE.json`):
  train      in-domain requests: the base model's training data
  test_id    new requests for in-domain tools (the control)
  test_ood   requests for out-of-domain tools
  ood_train  labelled out-of-domain requests, disjoint from test_ood: the SFT baseline's and the teacher's data

Run `python scripts/derive_sealshift.py --data-dir ../shared/data` to re-derive; the output is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ttsi.benchmarks.sealshift import SPLITS_DIR
from ttsi.errors import TaskError
from ttsi.task import Call, Task, Tool

SEED = 7
OOD_FIELDS = 22  # of 146 top-level fields, ~15% of the tools
TOOLS_PER_PROMPT = 2
TRAIN_PER_TOOL = 3
SIZES = {"test_id": 150, "test_ood": 250, "ood_train": 300}
JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
SOURCES = ("tool.jsonl", "dev.jsonl", "test_in_domain.jsonl", "test_out_domain.jsonl")

# Fallback values for string parameters whose description gives no example, chosen by the parameter's name.
_POOLS = {
    "name": ["Green Valley", "Atlas", "Maria Lopez", "Blue Harbor", "Project Orion", "Lucas Chen", "Sunrise",
             "Nova Labs", "Emma Brown", "Silver Lake", "Red Fox", "Omar Haddad", "Northwind", "Aiko Tanaka"],
    "place": ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Denver", "Seoul", "Nairobi", "Quito", "Berlin",
              "Toronto", "Mumbai", "Sydney", "Madrid"],
    "language": ["English", "French", "Spanish", "German", "Japanese", "Arabic", "Hindi"],
    "email": ["ana@mail.com", "li@work.org", "sam@home.net", "kim@lab.io", "raj@shop.com"],
    "generic": ["standard", "premium", "basic", "weekly report", "summer plan", "high", "low", "blue",
                "beginner", "advanced", "organic", "urgent", "public", "annual review", "summary", "default"],
}
_PLACE_WORDS = ("location", "city", "country", "destination", "address", "region", "place", "origin")


def words(name: str) -> str:
    """A parameter name as the words a request would use: `patient_id` / `patientID` -> `patient id`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ")
    return re.sub(r"\s+", " ", spaced).strip().lower()


def examples_in(description: str) -> list[str]:
    """The values a parameter description offers as examples: `(e.g., MRI, CT scan)` -> [MRI, CT scan]."""
    found = re.search(r"\(e\.g\.?,?\s*([^)]*)\)", description)
    if not found:
        return []
    values = [v.strip().strip("'\".") for v in found.group(1).split(",")]
    return [v for v in values if 0 < len(v) <= 30 and not set(v) & set('"()[]{}')
            and not v.lower().startswith(("etc", "and "))]


def draw_value(name: str, spec: dict[str, Any], rng: random.Random) -> Any:
    """A plausible argument value for one parameter."""
    kind, low = spec["type"], name.lower()
    if kind == "int":
        return rng.randint(1990, 2024) if "year" in low else rng.randint(1, 500)
    if kind == "float":
        return round(rng.uniform(0.5, 500), rng.choice([1, 2]))
    if kind == "bool":
        return rng.choice([True, False])
    offered = examples_in(spec.get("description", ""))
    if offered:
        return rng.choice(offered)
    if low == "id" or low.endswith(("_id", "id")):
        return f"{rng.choice('ABCDEFGHKMNPRSTX')}{rng.randint(1000, 99999)}"
    if "date" in low:
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if "email" in low:
        return rng.choice(_POOLS["email"])
    if "language" in low:
        return rng.choice(_POOLS["language"])
    if any(w in low for w in _PLACE_WORDS):
        return rng.choice(_POOLS["place"])
    if "name" in low or "title" in low:
        return rng.choice(_POOLS["name"])
    return rng.choice(_POOLS["generic"])


def surface(value: Any) -> str:
    """How a value is written in a request (and must be copied back into the call)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pairs(args: dict[str, Any], rng: random.Random, quote: bool) -> list[tuple[str, str]]:
    out = []
    for name, value in args.items():
        text = surface(value)
        out.append((words(name), f'"{text}"' if quote and isinstance(value, str) else text))
    return out


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def make_query(tool: dict[str, Any], args: dict[str, Any], rng: random.Random) -> str:
    """One request for `tool` with `args`, in one of five templates."""
    desc = tool["api_description"].strip().rstrip(".")
    lower = desc[0].lower() + desc[1:]
    pairs = _pairs(args, rng, quote=rng.random() < 0.5)
    template = rng.randrange(5)
    if template == 0:
        return f"{desc}. " + " ".join(f"The {p} is {v}." for p, v in pairs)
    if template == 1:
        return f"Please {lower} with " + _join([f"{p} {v}" for p, v in pairs]) + "."
    if template == 2:
        return f"I need to {lower}: " + "; ".join(f"{p} = {v}" for p, v in pairs) + "."
    if template == 3:
        return f"Can you {lower}? Use " + _join([f"{v} as the {p}" for p, v in pairs]) + "."
    return f"{desc} for " + _join([f"the {p} {v}" for p, v in pairs]) + ", please."


def eligible(tool: dict[str, Any]) -> bool:
    """Tools the templates can express: 1 to 3 required scalar parameters with identifier names."""
    params, required = tool.get("parameters") or {}, tool.get("required") or []
    return (1 <= len(required) <= 3 and all(r in params for r in required)
            and all(p.get("type") in JSON_TYPES and n.isidentifier() for n, p in params.items()))


def to_tool(tool: dict[str, Any]) -> Tool:
    """The schema the agent sees: every parameter with its JSON type, and the required list."""
    props = {name: {"type": JSON_TYPES[p["type"]]} for name, p in tool["parameters"].items()}
    return Tool(tool["api_name"], tool["api_description"].strip(),
                {"type": "object", "properties": props, "required": list(tool["required"])})


def top_field(tool: dict[str, Any]) -> str:
    return tool["field"].split("/")[0]


def split_fields(tools: list[dict[str, Any]], seed: int = SEED, n_ood: int = OOD_FIELDS) -> tuple[set[str], set[str]]:
    """(in-domain, out-of-domain) top-level fields, drawn by a seeded shuffle of the sorted field names."""
    fields = sorted({top_field(t) for t in tools})
    random.Random(seed).shuffle(fields)
    return set(fields[n_ood:]), set(fields[:n_ood])


class _Maker:
    """Builds tasks for one pool of tools, with distractors drawn from the same pool (same field first)."""

    def __init__(self, tools: list[dict[str, Any]], rng: random.Random):
        self.tools, self.rng = tools, rng
        self.by_field: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for t in tools:
            self.by_field[top_field(t)].append(t)

    def offered(self, gold: dict[str, Any]) -> list[Tool]:
        same = [t for t in self.by_field[top_field(gold)] if t is not gold]
        others = self.rng.sample(same, min(len(same), TOOLS_PER_PROMPT - 1))
        while len(others) < TOOLS_PER_PROMPT - 1:
            pick = self.rng.choice(self.tools)
            if pick is not gold and pick not in others:
                others.append(pick)
        names = [gold, *others]
        self.rng.shuffle(names)
        return [to_tool(t) for t in names]

    def templated(self, gold: dict[str, Any], task_id: str) -> Task:
        args = {n: draw_value(n, gold["parameters"][n], self.rng) for n in gold["required"]}
        query = make_query(gold, args, self.rng)
        return Task(id=task_id, messages=[{"role": "user", "content": query}], tools=self.offered(gold),
                    answer=[Call(gold["api_name"], args)], format="json",
                    meta={"field": gold["field"], "subset": "templated"})

    def real(self, gold: dict[str, Any], query: str, args: dict[str, Any], task_id: str) -> Task:
        return Task(id=task_id, messages=[{"role": "user", "content": query}], tools=self.offered(gold),
                    answer=[Call(gold["api_name"], args)], format="json",
                    meta={"field": gold["field"], "subset": "real", "source_id": task_id})


def real_queries(data_dir: Path, catalogue: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(id, query, tool name, arguments) of real single-call Seal-Tools queries whose call fits its schema."""
    out = []
    for name in SOURCES[1:]:
        for line in (data_dir / name).read_text().splitlines():
            item = json.loads(line)
            calls = item.get("calling") or []
            if len(calls) != 1 or calls[0]["api"] not in catalogue:
                continue
            tool, args = catalogue[calls[0]["api"]], calls[0].get("parameters") or {}
            if (eligible(tool) and set(tool["required"]) <= set(args) <= set(tool["parameters"])
                    and all(isinstance(v, (str, int, float)) and "API_call" not in str(v) for v in args.values())):
                out.append((item["id"], item["query"], tool["api_name"], args))
    return out


def _fill(split: list[Task], maker: _Maker, tools: list[dict[str, Any]], n: int, prefix: str, avoid: set[str],
          rng: random.Random) -> None:
    """Add `n` templated tasks on tools drawn in turn from a shuffled list, never repeating a query in `avoid`."""
    order = list(tools)
    rng.shuffle(order)
    i = 0
    while n > 0:
        task = maker.templated(order[i % len(order)], f"{prefix}-{len(split)}")
        i += 1
        if task.query in avoid:
            continue
        avoid.add(task.query)
        split.append(task)
        n -= 1


def seal_tools_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir)
    root = root / "seal_tools" if (root / "seal_tools").is_dir() else root
    missing = [n for n in SOURCES if not (root / n).is_file()]
    if missing:
        raise TaskError(f"Seal-Tools files missing under {root}: {', '.join(missing)}")
    return root


def derive(data_dir: str | Path) -> dict[str, list[Task]]:
    """All four splits from the Seal-Tools directory (deterministic)."""
    root = seal_tools_dir(data_dir)
    catalogue = {t["api_name"]: t for t in map(json.loads, (root / SOURCES[0]).read_text().splitlines())}
    tools = sorted((t for t in catalogue.values() if eligible(t)), key=lambda t: t["api_name"])
    id_fields, _ = split_fields(list(catalogue.values()))
    id_tools = [t for t in tools if top_field(t) in id_fields]
    ood_tools = [t for t in tools if top_field(t) not in id_fields]
    rng = random.Random(SEED)
    id_maker, ood_maker = _Maker(id_tools, rng), _Maker(ood_tools, rng)

    splits: dict[str, list[Task]] = {"train": [], "test_id": [], "test_ood": [], "ood_train": []}
    for tool in id_tools:
        splits["train"] += [id_maker.templated(tool, f"train-{tool['api_name']}-{j}") for j in range(TRAIN_PER_TOOL)]
    real = real_queries(root, catalogue)
    real_id = [r for r in real if top_field(catalogue[r[2]]) in id_fields]
    real_ood = [r for r in real if top_field(catalogue[r[2]]) not in id_fields]
    rng.shuffle(real_id)
    for i, (rid, query, name, args) in enumerate(real_id):  # half to training, half to the in-domain test
        splits["train" if i < len(real_id) // 2 else "test_id"].append(id_maker.real(catalogue[name], query, args,
                                                                                      rid))
    _fill(splits["test_id"], id_maker, id_tools, SIZES["test_id"], "test_id", {t.query for t in splits["train"]},
          rng)
    taken: set[str] = set()
    _fill(splits["ood_train"], ood_maker, ood_tools, SIZES["ood_train"], "ood_train", taken, rng)
    _fill(splits["test_ood"], ood_maker, ood_tools, SIZES["test_ood"], "test_ood", taken, rng)
    splits["test_ood"] += [ood_maker.real(catalogue[name], query, args, rid) for rid, query, name, args in real_ood]
    return splits


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(splits: dict[str, list[Task]], data_dir: str | Path, out_dir: Path = SPLITS_DIR) -> dict[str, Any]:
    """Write the splits (`write_splits`) and PROVENANCE.json: sources, seed, held-out fields, counts."""
    root = seal_tools_dir(data_dir)
    write_splits(splits, out_dir)
    catalogue = [json.loads(line) for line in (root / SOURCES[0]).read_text().splitlines()]
    id_fields, ood_fields = split_fields(catalogue)
    provenance = {
        "name": "sealshift",
        "derived_from": "Seal-Tools (Wu et al., NLPCC 2024), https://github.com/fairyshine/Seal-Tools "
                        "commit ce753ecd60ed08dd376984035de531ab8421f1c6",
        "license": "Apache-2.0 (as Seal-Tools)",
        "script": "scripts/derive_sealshift.py (ttsi.sealshift.derive)",
        "seed": SEED,
        "sources_sha256": {n: _sha256(root / n) for n in SOURCES},
        "ood_fields": sorted(ood_fields),
        "in_domain_fields": len(id_fields),
        "counts": {name: {"tasks": len(tasks), "tools": len({t.answer[0].name for t in tasks if t.answer}),
                          "real": sum(t.meta.get("subset") == "real" for t in tasks)}
                   for name, tasks in splits.items()},
    }
    (out_dir / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def write_splits(splits: dict[str, list[Task]], out_dir: Path) -> None:
    """`tools.jsonl` (each schema once) and one compact JSONL per split (tools by name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tools = {tool.name: tool for tasks in splits.values() for t in tasks for tool in t.tools}
    (out_dir / "tools.jsonl").write_text("".join(json.dumps(tools[n].to_openai()["function"]) + "\n"
                                                 for n in sorted(tools)))
    for name, tasks in splits.items():
        (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(_compact(t), ensure_ascii=False) + "\n"
                                                       for t in tasks))


def _compact(task: Task) -> dict[str, Any]:
    return {"id": task.id, "query": task.query, "tools": [t.name for t in task.tools],
            "answer": [c.to_dict() for c in task.answer or []], "meta": task.meta}

"""Derive ArithShift: arithmetic word problems with GSM8K-style worked solutions, under a shift of actions.

Every problem is generated from a seed, so the splits are reproducible byte for byte (`scripts/derive_arithshift.py`
writes them to `ttsi/data/arithshift/` with `PROVENANCE.json`). A problem is a start sentence and one or two
operation sentences in one world (a person, a kind of thing, the verbs of that world), then a question:

    Maya has 4 baskets with 6 apples in each. She picks 13 more apples. How many apples does Maya have now?

Its solution writes every calculation with a calculator annotation, as GSM8K does, and ends with `#### N`:

    4 baskets with 6 apples each make 4*6 = <<4*6=24>>24 apples.
    Then she has 24+13 = <<24+13=37>>37 apples.
    #### 37

The shift is real and documented: in the held-out splits (`test_ood`, `ood_train`) four of the six worlds act
with verbs never seen in training, for every operation ("She polishes 13 more cookies", "He rusts 4 of the books").
The words that signal each operation stay: "more" adds, "of the" after a verb takes away, "times as many"
multiplies, "equally" divides; names, things and phrasings are the in-domain ones. A model trained on the
in-domain worlds has to read past a verb it has never seen. `calibration` holds more in-domain problems: the
known-good inputs a token gate's reference profile is built from (`ttsi calibrate --profile`).

The shift was chosen by the base model's accuracy alone, before any TT-SI run: held-out worlds with every word new
(names, things, containers, verbs, phrasings) left it 2.5% of the held-out test (82.0% in-domain), new words in
the same phrasings 5%, new things 19%, new verbs 36%, new names 48% (first 100 items each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1
SEED = 11
COUNTS = {"train": 8000, "test_id": 400, "test_ood": 400, "ood_train": 400, "calibration": 200}


@dataclass(frozen=True)
class Scenario:
    """One world of problems: its things, containers, verbs and groups (plural / singular where needed)."""

    name: str
    things: tuple[str, ...]  # plural nouns
    container: str  # plural
    add_verbs: tuple[str, ...]  # "<verb> B more <things>"
    sub_verbs: tuple[str, ...]  # "<verb> B of the <things>"
    mul_verbs: tuple[str, ...]  # "<verb> them, so there are K times as many"
    div_verb: str  # "<verb> them equally into K <groups>"
    group: tuple[str, str]  # (plural, singular)


IN_DOMAIN = (
    Scenario("orchard", ("apples", "pears", "plums", "peaches"), "baskets", ("picks", "gathers"),
             ("eats", "gives away"), ("grafts",), "packs", ("crates", "crate")),
    Scenario("bakery", ("cookies", "muffins", "cupcakes", "rolls"), "trays", ("bakes", "makes"),
             ("sells", "eats"), ("doubles the recipe for",), "puts", ("boxes", "box")),
    Scenario("school", ("pencils", "crayons", "markers", "erasers"), "packs", ("buys", "finds"),
             ("loses", "lends out"), ("orders",), "shares", ("desks", "desk")),
    Scenario("library", ("books", "magazines", "comics", "maps"), "shelves", ("gets", "receives"),
             ("returns", "donates"), ("copies",), "sorts", ("piles", "pile")),
    Scenario("farm", ("eggs", "carrots", "potatoes", "onions"), "sacks", ("collects", "digs up"),
             ("cooks", "feeds the pigs"), ("plants",), "divides", ("bins", "bin")),
    Scenario("toys", ("marbles", "stickers", "cards", "blocks"), "bags", ("wins", "trades for"),
             ("gives", "misplaces"), ("collects",), "splits", ("jars", "jar")),
)

# The held-out actions: for four of the worlds, a verb never seen in training for every operation.
HELD_OUT_ACTIONS = {
    "orchard": (("hauls in", "unloads"), ("repairs", "ships off"), ("rigs",), "stows"),
    "bakery": (("polishes", "calibrates"), ("cracks", "discards"), ("grinds",), "arranges"),
    "school": (("drills", "retrieves"), ("melts", "buries"), ("labels",), "stacks"),
    "library": (("forges", "machines"), ("rusts", "scraps"), ("welds",), "bundles"),
}
HELD_OUT = tuple(
    dataclasses.replace(s, name=f"{s.name}, new actions", add_verbs=add, sub_verbs=sub, mul_verbs=mul, div_verb=div)
    for s in IN_DOMAIN if s.name in HELD_OUT_ACTIONS for add, sub, mul, div in [HELD_OUT_ACTIONS[s.name]])

NAMES = ("Maya", "Leo", "Sara", "Tom", "Nina", "Omar", "Lily", "Ben", "Zoe", "Sam", "Ava", "Max", "Emma", "Jack",
         "Mia", "Noah")
PRONOUN = {n: "She" if n in ("Maya", "Sara", "Nina", "Lily", "Zoe", "Ava", "Emma", "Mia") else "He" for n in NAMES}
START = ("{name} has {a} {thing}.", "{name} had {a} {thing} this morning.")
GROUPS = "{name} has {a} {cont} with {b} {thing} in each."
QUESTION = ("How many {thing} does {name} have now?", "How many {thing} does {name} have in the end?")
DIV_QUESTION = "How many {thing} are in each {group1}?"


def make_problem(rng: random.Random, scenario: Scenario) -> dict[str, Any]:
    """One problem: {"question", "answer" (the worked solution), "number", "ops"} drawn with `rng`."""
    name = rng.choice(NAMES)
    pron = PRONOUN[name]
    thing = rng.choice(scenario.things)
    cont = scenario.container
    sentences: list[str] = []
    steps: list[str] = []
    ops: list[str] = []
    if rng.random() < 0.4:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        value = a * b
        # a draw from one phrasing: it keeps the random stream, and so the shipped splits, as they were derived
        sentences.append(rng.choice((GROUPS,)).format(name=name, a=a, b=b, cont=cont, thing=thing))
        steps.append(f"{a} {cont} with {b} {thing} each make {a}*{b} = <<{a}*{b}={value}>>{value} {thing}.")
        ops.append("groups")
    else:
        value = rng.randint(5, 60)
        sentences.append(rng.choice(START).format(name=name, a=value, thing=thing))
        ops.append("start")
    question = rng.choice(QUESTION).format(thing=thing, name=name)
    for i in range(rng.choice((1, 2, 2))):
        last = i == 1 or rng.random() < 0.3
        choices = (["add"] + (["sub"] if value >= 4 else []) + (["mul"] if value <= 30 else [])
                   + (["div"] if last and _divisors(value) else []))
        op = rng.choice(choices)
        if op == "add":
            b = rng.randint(2, 40)
            new = value + b
            sentences.append(f"{pron} {rng.choice(scenario.add_verbs)} {b} more {thing}.")
            steps.append(f"Then {pron.lower()} has {value}+{b} = <<{value}+{b}={new}>>{new} {thing}.")
        elif op == "sub":
            b = rng.randint(1, value - 2)
            new = value - b
            sentences.append(f"{pron} {rng.choice(scenario.sub_verbs)} {b} of the {thing}.")
            steps.append(f"Then {pron.lower()} has {value}-{b} = <<{value}-{b}={new}>>{new} {thing}.")
        elif op == "mul":
            k = rng.randint(2, 4)
            new = value * k
            sentences.append(f"{pron} {rng.choice(scenario.mul_verbs)} them, so there are {k} times as many.")
            steps.append(f"Then there are {value}*{k} = <<{value}*{k}={new}>>{new} {thing}.")
        else:
            k = rng.choice(_divisors(value))
            new = value // k
            group, group1 = scenario.group
            sentences.append(f"{pron} {scenario.div_verb} them equally into {k} {group}.")
            steps.append(f"Each {group1} gets {value}/{k} = <<{value}/{k}={new}>>{new} {thing}.")
            question = DIV_QUESTION.format(thing=thing, group1=group1)
        ops.append(op)
        value = new
        if op == "div" or last:
            break
    return {"question": " ".join([*sentences, question]), "answer": "\n".join([*steps, f"#### {value}"]),
            "number": value, "ops": ops}


def _divisors(n: int) -> list[int]:
    return [k for k in range(2, 10) if n % k == 0 and n // k >= 2] if n <= 100 else []


def derive(seed: int = SEED, counts: dict[str, int] = COUNTS) -> dict[str, list[dict[str, Any]]]:
    """Every split's rows, no question in two splits (nor twice in one)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, count in counts.items():
        scenarios = HELD_OUT if split in ("test_ood", "ood_train") else IN_DOMAIN
        rows: list[dict[str, Any]] = []
        while len(rows) < count:
            scenario = scenarios[len(rows) % len(scenarios)]
            problem = make_problem(rng, scenario)
            if problem["question"] in seen:
                continue
            seen.add(problem["question"])
            rows.append({"id": f"{split}-{len(rows)}", **problem, "scenario": scenario.name})
        splits[split] = rows
    return splits


def write(splits: dict[str, list[dict[str, Any]]], out: Path, seed: int = SEED) -> dict[str, Any]:
    """The splits as JSON Lines in `out`, with PROVENANCE.json (seed, scenarios, counts, file hashes)."""
    out.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for split, rows in splits.items():
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        (out / f"{split}.jsonl").write_text(text)
        hashes[f"{split}.jsonl"] = hashlib.sha256(text.encode()).hexdigest()
    provenance = {
        "name": "arithshift",
        "derived_from": "nothing: generated from a seed by ttsi.arithshift.derive",
        "license": "Apache-2.0 (generated by ttsi)",
        "script": "scripts/derive_arithshift.py (ttsi.arithshift.derive)",
        "version": VERSION, "seed": seed,
        "in_domain_scenarios": [s.name for s in IN_DOMAIN],
        "held_out_actions": {world: dict(zip(("add", "take away", "multiply", "divide"), verbs, strict=True))
                             for world, verbs in HELD_OUT_ACTIONS.items()},
        "counts": {split: {"tasks": len(rows), **_op_counts(rows)} for split, rows in splits.items()},
        "sha256": hashes,
    }
    (out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def _op_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for op in row["ops"]:
            counts[op] = counts.get(op, 0) + 1
    return dict(sorted(counts.items()))

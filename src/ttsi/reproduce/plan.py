"""A reproduction plan: a matrix of cells (benchmark:split x method x settings x seeds), each cell one `ttsi eval` run.

A plan file is TOML. Every key of a cell may also go in `[defaults]`, which every cell starts from; a list under
`benchmark` or `method` expands into one cell per combination:

    name = "seal-ablations"
    [defaults]
    seeds = [0, 1, 2, 3, 4]
    batch = 16
    [[cell]]
    benchmark = ["sealtools:test_out_domain", "nexusraven"]
    method = ["base", "tt-si", "no-gate"]
    [[cell]]
    benchmark = "sealtools:test_out_domain"
    method = "tt-si"
    label = "tt-si k=3"
    k = 3
    tau = [0.35, 0.65, 0.95]            # a sweep, read off one run
    [cell.agent]                          # any AgentConfig field, nested as in run.json's "agent"
    learn = { lr = 1e-4, rank = 16 }

Every cell is checked (benchmark and split, method, every agent setting, seeds, the sweep) when the plan is read,
before anything runs; a bad key or value is one ConfigError naming the cell and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsi.config import MAX_SEED, METHODS, AgentConfig
from ttsi.errors import ConfigError, TTSIError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLAN_METHODS = (*METHODS, "sft")  # sft: the base method on a model with an adapter trained on a labelled split
# Shortcuts for the agent settings a plan most often changes: key -> path in AgentConfig.to_dict().
SHORTCUTS = {"k": ("synthesis", "k"), "verify": ("synthesis", "verify"), "lr": ("learn", "lr"),
             "epochs": ("learn", "epochs"), "measure": ("gate", "measure"), "samples": ("samples",),
             "max_new_tokens": ("max_new_tokens",), "reference": ("gate", "reference")}
CELL_KEYS = ("benchmark", "method", "label", "seeds", "tau", "agent", "limit", "sample", "batch", "scoring", "model",
             "teacher", "sft", "base_answers", *SHORTCUTS)
SFT_KEYS = ("split", "limit", "epochs", "lr", "batch_size", "seed")


@dataclass(frozen=True)
class SFTSpec:
    """The supervised baseline's adapter: LoRA on the labelled items of `benchmark:split` (the first `limit`)."""

    benchmark: str
    split: str
    limit: int | None = None
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 1
    seed: int = 0


@dataclass(frozen=True)
class Cell:
    """One run of the matrix: a method with its settings on one benchmark split, over seeds."""

    name: str  # unique in the plan: the run directory's name
    benchmark: str
    split: str
    method: str  # a plan method: an agent method, or sft
    label: str  # the row name in tables (the method, or what the cell changes)
    seeds: tuple[int, ...]
    taus: tuple[float, ...]  # sorted; the run adapts at the largest
    agent: AgentConfig  # validated; its method is "base" for sft
    batch: int = 1
    limit: int | None = None  # the split's first N items
    sample: int | None = None  # a seeded sample of N items, stratified by the benchmark's subsets
    scoring: str | None = None
    model: str | None = None  # None: the model given on the command line
    teacher: str | None = None  # a local model directory that writes the pairs (tt-d, tt-icl from the teacher)
    sft: SFTSpec | None = None

    @property
    def spec(self) -> str:
        return f"{self.benchmark}:{self.split}"


@dataclass(frozen=True)
class Plan:
    name: str
    cells: tuple[Cell, ...]
    note: str = ""
    # Published figures shown beside ours: (benchmark, row label) -> text; ("average", label) for the average row.
    published: dict[tuple[str, str], str] = field(default_factory=dict)
    average: bool = True  # a table of each method averaged over the benchmarks (when there are several)


def load_plan(path: Path) -> Plan:
    """A plan from a TOML file; any problem is one ConfigError naming the file (and the cell and key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the plan file {path}: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse_plan(data, str(path), default_name=path.stem)


def parse_plan(data: dict[str, Any], source: str, default_name: str = "plan") -> Plan:
    """A plan from its parsed TOML (`source` names it in errors)."""
    unknown = sorted(set(data) - {"name", "note", "defaults", "cell"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} at the top level; a plan has name, note, "
                          "[defaults] and [[cell]] tables")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: 'defaults' must be a table ([defaults])")
    specs = data.get("cell")
    if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
        raise ConfigError(f"{source}: a plan needs at least one [[cell]] table")
    for key in ("name", "note"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{source}: {key!r} must be a string")
    cells: list[Cell] = []
    for i, spec in enumerate(specs, 1):
        cells += expand(_merge(defaults, spec), f"{source}: cell {i}")
    return Plan(name=data.get("name", default_name), cells=check_names(cells, source), note=data.get("note", ""))


def check_names(cells: list[Cell], source: str) -> tuple[Cell, ...]:
    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.name in seen:
            raise ConfigError(f"{source}: two cells are named {cell.name!r} ({cell.spec} {cell.label}): give them "
                              "distinct labels (label = \"...\")")
        seen[cell.name] = cell
    return tuple(cells)


def expand(spec: dict[str, Any], where: str) -> list[Cell]:
    """The cells of one [[cell]] table: one per benchmark x method when either is a list."""
    unknown = sorted(set(spec) - set(CELL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a cell takes {', '.join(CELL_KEYS)}")
    for key in ("benchmark", "method"):
        if key not in spec:
            raise ConfigError(f"{where}: {key!r} is missing")
    benchmarks, methods = _strings(spec["benchmark"], where, "benchmark"), _strings(spec["method"], where, "method")
    return [make_cell(spec, b, m, f"{where} ({b} {m})") for b, m in itertools.product(benchmarks, methods)]


def make_cell(spec: dict[str, Any], benchmark: str, method: str, where: str) -> Cell:
    """One cell, every setting checked."""
    from ttsi.benchmarks import parse_spec
    from ttsi.evaluation.runner import check_sweep

    try:
        bench, split = parse_spec(benchmark)
        bench.with_scoring(_opt(spec, "scoring", str, where))
    except TTSIError as e:
        raise ConfigError(f"{where}: {e}") from None
    if method not in PLAN_METHODS:
        raise ConfigError(f"{where}: unknown method {method!r}; choose one of {', '.join(PLAN_METHODS)}")
    label = _opt(spec, "label", str, where) or method
    seeds = _seeds(spec.get("seeds", [0]), where)
    teacher = _opt(spec, "teacher", str, where)
    config = agent_config(spec, "base" if method == "sft" else method, where)
    taus = spec.get("tau", config.gate.tau)
    taus = sorted(taus if isinstance(taus, list) else [taus])
    if not taus or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in taus):
        raise ConfigError(f"{where}: 'tau' must be a number or a list of numbers")
    config = dataclasses.replace(config, gate=dataclasses.replace(config.gate, tau=float(taus[-1])))
    try:
        config.validate(teacher_given=teacher is not None)
        check_sweep(config, [float(t) for t in taus])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    limit, sample = _count(spec, "limit", where), _count(spec, "sample", where)
    if limit is not None and sample is not None:
        raise ConfigError(f"{where}: give 'limit' (the first N items) or 'sample' (a seeded sample of N), not both")
    batch = _count(spec, "batch", where) or 1
    sft = _sft(spec, bench.name, method, where)
    name = re.sub(r"[^\w.=+-]+", "_", f"{bench.name}-{split}-{label}")
    return Cell(name=name, benchmark=bench.name, split=split, method=method, label=label, seeds=seeds,
                taus=tuple(float(t) for t in taus), agent=config, batch=batch, limit=limit, sample=sample,
                scoring=spec.get("scoring"), model=_opt(spec, "model", str, where), teacher=teacher, sft=sft)


def agent_config(spec: dict[str, Any], method: str, where: str) -> AgentConfig:
    """AgentConfig's defaults, then the cell's `agent` table, then its shortcuts (k, lr, ...); base answers recorded
    unless `base_answers = false`."""
    settings = AgentConfig(record_base=True).to_dict()
    agent = spec.get("agent", {})
    if not isinstance(agent, dict):
        raise ConfigError(f"{where}: 'agent' must be a table of AgentConfig settings")
    for key, value in agent.items():
        if key not in settings:
            raise ConfigError(f"{where}: unknown agent setting {key!r}; known: {', '.join(settings)}")
        if isinstance(settings[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: agent setting {key!r} must be a table")
            bad = sorted(set(value) - set(settings[key]))
            if bad:
                raise ConfigError(f"{where}: unknown agent setting '{key}.{bad[0]}'; known: "
                                  f"{', '.join(settings[key])}")
            settings[key].update(value)
        else:
            settings[key] = value
    for key, path in SHORTCUTS.items():
        if key in spec:
            target = settings
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = spec[key]
    if "base_answers" in spec:
        if not isinstance(spec["base_answers"], bool):
            raise ConfigError(f"{where}: 'base_answers' must be true or false")
        settings["record_base"] = spec["base_answers"]
    settings["method"] = method
    if isinstance(settings["synthesis"]["verify"], str):  # "none" or "schema,consistency", as on the command line
        names = [v.strip() for v in settings["synthesis"]["verify"].split(",") if v.strip()]
        settings["synthesis"]["verify"] = [] if names == ["none"] else names
    try:
        return AgentConfig.from_dict(settings)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: bad agent settings: {e}") from None


def _sft(spec: dict[str, Any], benchmark: str, method: str, where: str) -> SFTSpec | None:
    sft = spec.get("sft")
    if method != "sft":
        if sft is not None:
            raise ConfigError(f"{where}: 'sft' is for method sft only")
        return None
    if not isinstance(sft, dict) or "split" not in sft:
        raise ConfigError(f"{where}: method sft needs an sft table with the labelled split to train on, e.g. "
                          "sft = { split = \"dev\", epochs = 3 }")
    bad = sorted(set(sft) - set(SFT_KEYS))
    if bad:
        raise ConfigError(f"{where}: unknown sft setting {bad[0]!r}; known: {', '.join(SFT_KEYS)}")
    from ttsi.benchmarks import parse_spec

    split_spec = sft["split"] if ":" in str(sft["split"]) else f"{benchmark}:{sft['split']}"
    try:
        bench, split = parse_spec(split_spec)
    except TTSIError as e:
        raise ConfigError(f"{where}: sft split: {e}") from None
    out = SFTSpec(benchmark=bench.name, split=split, limit=_count(sft, "limit", where),
                  epochs=_count(sft, "epochs", where) or SFTSpec.epochs,
                  lr=sft.get("lr", SFTSpec.lr), batch_size=_count(sft, "batch_size", where) or 1,
                  seed=sft.get("seed", 0))
    learn = AgentConfig().learn
    try:
        AgentConfig(learn=dataclasses.replace(learn, lr=out.lr, epochs=out.epochs, batch_size=out.batch_size),
                    seed=out.seed).validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: sft: {e}") from None
    return out


def _merge(defaults: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The cell's keys over the defaults'; the agent tables merged, and a default shortcut (lr = ...) dropped where
    the cell's own agent table sets the same setting (the cell's word is the last)."""
    out = copy.deepcopy(defaults)
    agent = spec.get("agent") if isinstance(spec.get("agent"), dict) else {}
    for key, path in SHORTCUTS.items():
        table = agent.get(path[0]) if len(path) > 1 else agent
        if key in out and key not in spec and isinstance(table, dict) and path[-1] in table:
            del out[key]
    for key, value in spec.items():
        if key == "agent" and isinstance(value, dict) and isinstance(out.get("agent"), dict):
            merged = out["agent"]
            for k, v in value.items():
                merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strings(value: Any, where: str, key: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{where}: {key!r} must be a name or a list of names")
    return values


def _opt(spec: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = spec.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _count(spec: dict[str, Any], key: str, where: str) -> int | None:
    value = spec.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{where}: {key!r} must be an integer of at least 1, got {value!r}")
    return value


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in value)):
        raise ConfigError(f"{where}: 'seeds' must be a list of integers in [0, 2^63 - 1], got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: 'seeds' repeats a seed: {value!r}")
    return tuple(value)

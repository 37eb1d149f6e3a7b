"""What a `ttsi eval` run was asked to do: the settings its run.json holds and a resume must match."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ttsi.config import AgentConfig


@dataclass(frozen=True)
class EvalSettings:
    """`ttsi eval`'s run.json, typed. `to_dict` writes the keys run.json has always had, so older runs resume."""

    model: str
    adapter: str | None
    benchmark: str
    split: str
    limit: int | None  # --limit as given (None: the whole split)
    n: int  # items evaluated
    seeds: tuple[int, ...]
    taus: tuple[float, ...]  # sorted; the run adapts at the largest
    agent: AgentConfig
    batch: int
    data_dir: str | None
    dtype: str
    device: str | None
    scoring: str | None = None  # the benchmark's scoring mode; None (and no key) where it has a single one
    label: str | None = None  # the run's name in reports (e.g. tt-si+answer-check); None (and no key): the method

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for optional in ("scoring", "label"):
            if out[optional] is None:
                del out[optional]
        return out | {"seeds": list(self.seeds), "taus": list(self.taus), "agent": self.agent.to_dict()}

"""What the agent returns for one input: the answer and the trace of how it was reached (`Response`).

Read by the evaluation, the server and `ttsi score` alike, so it loads no model code: the stage types it names
(the gate's `Uncertainty`, the synthetic pairs, the training log) are imported for type checking only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from ttsi.task import answer_json

if TYPE_CHECKING:
    from ttsi.augment import SyntheticPair
    from ttsi.awareness import Uncertainty
    from ttsi.engine.train import TrainLog
    from ttsi.task import Call

STAGES = ("gate_s", "synthesize_s", "train_s", "answer_s", "reset_s")


class Decision(str, Enum):
    """What the gate and the method decided for an input."""

    ADAPT = "adapt"  # synthesize pairs and learn from them (or, for tt-icl, show them as demonstrations)
    SKIP = "skip"  # answer with the base model

    def __str__(self) -> str:
        return self.value


@dataclass
class Response:
    """The answer to one input and the trace of how it was reached."""

    id: str
    method: str
    uncertainty: Uncertainty | None  # None for a task without tools
    decision: Decision
    reason: str  # why, and why not adapted when a decision to adapt fell back
    adapted: bool = False  # whether an adapted model wrote the answer
    answer: list[Call] | str | None = None  # calls, or a free-form answer; None when the output does not parse
    raw: str = ""  # the greedy answer
    parse_error: str | None = None
    samples: list[str] = field(default_factory=list)  # sampled answers (config.samples > 1), same model state
    synthetic: list[SyntheticPair] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    train: TrainLog | None = None
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    scoring_prompt: str = ""  # the prompt the gate scored after (the answer prompt, without demonstrations)
    batch: int = 1  # inputs answered (and, if adapted, trained) together in one batch with this one
    error: str | None = None  # "context_length": refused (not gated, adapted or answered); `reason` says why

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "method": self.method,
            "answer": answer_json(self.answer),
            "raw": self.raw, "parse_error": self.parse_error, "samples": self.samples,
            "uncertainty": None if self.uncertainty is None else self.uncertainty.to_dict(),
            "decision": self.decision.value, "adapted": self.adapted, "reason": self.reason,
            "synthetic": [p.to_dict() for p in self.synthetic], "rejected": self.rejected,
            "train": {"steps": 0, "losses": [], "lrs": []} if self.train is None else self.train.to_dict(),
            "timings": self.timings, "scoring_prompt": self.scoring_prompt, "batch": self.batch,
            "error": self.error,
        }

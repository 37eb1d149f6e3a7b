"""The token-level gate: how sure the model was at each token of its own answer, against a reference profile.

The seed's Relative Softmax Scoring, for any task: the model answers greedily once, and at every position of that
answer the softmax gives three statistics: the top-1 probability, the margin between the two most likely tokens,
and the entropy (`ttsi.engine.decode.StepStats`). A reference profile holds the same statistics pooled over the
answers to known-good inputs (by default the calibration inputs the base model answers correctly; `ttsi calibrate
--profile`). An input is uncertain when enough of its positions are less sure than the reference's low
percentile: at least `token_count` positions, or a share `token_share` of them (for entropy, "less sure" is above
the reference's high percentile). Normalised against the model's own typical certainty, the gate does not need
candidate actions, is not fooled by a long answer being long, and sees "sure of the structure, unsure of one
value": the trace names the tokens that were unsure. The greedy answer it generated is the answer when the input
is not adapted: no second generation.

The profile also gives the per-answer summaries the gate-quality report compares: mean token log-prob, minimum
token probability and mean entropy (`answer_measures`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttsi import jsonio
from ttsi.errors import ConfigError, TaskError

STATS = ("top1", "margin", "entropy")  # the order of `StepStats` rows
PROFILE_VERSION = 1
STEP = 0.5  # the profile keeps the percentiles 0, 0.5, ..., 100 of each statistic
MAX_UNSURE_SHOWN = 20  # unsure tokens listed in a trace


@dataclass
class TokenProfile:
    """A model's usual per-token certainty: percentiles of each statistic over known-good answers."""

    model: str  # the model it was built with (its name or directory)
    vocab_size: int
    n_inputs: int
    n_positions: int
    source: str  # which inputs: "correct" (answered correctly by the base model) or "all"
    percentiles: dict[str, list[float]]  # statistic -> its values at percentiles 0, STEP, ..., 100
    version: int = PROFILE_VERSION

    def threshold(self, stat: str, percentile: float) -> float:
        """The reference's `percentile`-th value of `stat` (for entropy the (100 - p)-th: high is unsure)."""
        p = 100 - percentile if stat == "entropy" else percentile
        values = self.percentiles[stat]
        pos = p / STEP
        lo, hi = math.floor(pos), math.ceil(pos)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(jsonio.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> TokenProfile:
        """Read a profile; ConfigError naming the file and the problem (missing, not JSON, wrong fields)."""
        where = Path(path)
        try:
            data = jsonio.read_json(where, "token-gate reference profile")
        except TaskError as e:
            raise ConfigError(f"{e} (build one with: ttsi calibrate --profile {where} --tasks REFERENCE)") from None
        expected = {"model", "vocab_size", "n_inputs", "n_positions", "source", "percentiles", "version"}
        if not isinstance(data, dict) or set(data) != expected:
            raise ConfigError(f"{where} is not a token-gate reference profile (expected the fields "
                              f"{', '.join(sorted(expected))})")
        if data["version"] != PROFILE_VERSION:
            raise ConfigError(f"{where}: profile version {data['version']!r}, this ttsi reads {PROFILE_VERSION}")
        count = round(100 / STEP) + 1
        percentiles = data["percentiles"]
        if (not isinstance(percentiles, dict) or set(percentiles) != set(STATS)
                or not all(isinstance(v, list) and len(v) == count and all(_finite(x) for x in v)
                           and v == sorted(v) for v in percentiles.values())):
            raise ConfigError(f"{where}: 'percentiles' must map {', '.join(STATS)} to {count} ascending numbers")
        if not all(isinstance(data[k], int) and not isinstance(data[k], bool) and data[k] > 0
                   for k in ("vocab_size", "n_inputs", "n_positions")):
            raise ConfigError(f"{where}: vocab_size, n_inputs and n_positions must be positive integers")
        return cls(**data)

    def check_model(self, name: str, vocab_size: int, where: str | Path = "the profile") -> None:
        """ConfigError when the profile was built with another model (another vocabulary or another name)."""
        if vocab_size != self.vocab_size or Path(name).name != Path(self.model).name:
            raise ConfigError(f"{where} was built with model {self.model!r} (vocabulary {self.vocab_size:,}); this "
                              f"is {name!r} (vocabulary {vocab_size:,}): rebuild it with ttsi calibrate --profile")


@dataclass
class TokenVerdict:
    """What the token gate saw in one answer."""

    stat: str
    threshold: float  # the reference's percentile value the positions are compared with
    positions: int
    flagged: int  # positions less sure than the threshold
    share: float
    unsure: list[dict[str, Any]]  # up to MAX_UNSURE_SHOWN: position, token text, value
    measures: dict[str, float]  # mean_logprob, min_prob, mean_entropy of the whole answer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_profile(rows: list[list[tuple[float, float, float]]], model: str, vocab_size: int,
                  source: str) -> TokenProfile:
    """The profile of these answers' per-position statistics (rows of (top1, margin, entropy))."""
    answers = [row for row in rows if row]
    if not answers:
        raise TaskError("no reference answer has a token: nothing to build a profile from")
    columns = list(zip(*(position for row in answers for position in row), strict=True))
    percentiles = {stat: _percentiles(sorted(values)) for stat, values in zip(STATS, columns, strict=True)}
    return TokenProfile(model=model, vocab_size=vocab_size, n_inputs=len(answers),
                        n_positions=sum(len(r) for r in answers), source=source, percentiles=percentiles)


def token_verdict(row: list[tuple[float, float, float]], token_text: Callable[[int], str], profile: TokenProfile,
                  stat: str, percentile: float) -> TokenVerdict:
    """Compare one answer's positions with the profile's `percentile` of `stat`; `token_text(i)`: position i's
    text, asked only for the unsure positions the trace shows."""
    column = STATS.index(stat)
    threshold = profile.threshold(stat, percentile)
    values = [position[column] for position in row]
    low = [i for i, v in enumerate(values) if (v > threshold if stat == "entropy" else v < threshold)]
    unsure = [{"position": i, "token": token_text(i), "value": values[i]} for i in low[:MAX_UNSURE_SHOWN]]
    return TokenVerdict(stat=stat, threshold=threshold, positions=len(values), flagged=len(low),
                        share=len(low) / len(values) if values else 0.0, unsure=unsure, measures=answer_measures(row))


def answer_measures(row: list[tuple[float, float, float]]) -> dict[str, float]:
    """Whole-answer confidences in [0, 1] (larger is surer): exp(mean log top-1), min top-1, 1 / (1 + mean
    entropy). An empty answer counts as fully sure (nothing was in doubt)."""
    if not row:
        return {"mean_logprob": 1.0, "min_prob": 1.0, "mean_entropy": 1.0}
    top1 = [max(p[0], 1e-45) for p in row]
    return {"mean_logprob": math.exp(sum(math.log(p) for p in top1) / len(top1)), "min_prob": min(top1),
            "mean_entropy": 1 / (1 + sum(p[2] for p in row) / len(row))}


def _percentiles(values: list[float]) -> list[float]:
    """Sorted values at percentiles 0, STEP, ..., 100 (linear interpolation, numpy's default)."""
    out = []
    for i in range(round(100 / STEP) + 1):
        pos = (len(values) - 1) * i * STEP / 100
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(values[lo] + (values[hi] - values[lo]) * (pos - lo))
    return list(itertools.accumulate(out, max))  # monotone even where interpolation rounds


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

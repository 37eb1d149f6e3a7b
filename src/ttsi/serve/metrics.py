"""Prometheus text exposition, written by hand: request counts, adaptation, stage latencies, queue and batches."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from ttsi.trace import STAGES, Response

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus histograms are exposed."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out = [f"{name}_bucket{_labels(labels | {'le': _num(b)})} {c}" for b, c in zip(self.buckets, self.counts,
                                                                                     strict=True)]
        out.append(f"{name}_bucket{_labels(labels | {'le': '+Inf'})} {self.count}")
        out.append(f"{name}_sum{_labels(labels)} {_num(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """Thread-safe counters the routes and the worker update; `render` writes the text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by HTTP status code
        self.answered = 0
        self.adapted = 0
        self.dropped_jobs = 0
        self.stages = {stage.removesuffix("_s"): Histogram(STAGE_BUCKETS) for stage in STAGES}
        self.batches = Histogram(BATCH_BUCKETS)

    def request(self, status: int) -> None:
        with self._lock:
            self.requests[str(status)] += 1

    def response(self, response: Response) -> None:
        with self._lock:
            self.answered += 1
            self.adapted += int(response.adapted)
            for stage, seconds in response.timings.items():
                name = stage.removesuffix("_s")
                if name in self.stages:
                    self.stages[name].observe(seconds)

    def batch(self, size: int) -> None:
        with self._lock:
            self.batches.observe(size)

    def dropped(self) -> None:
        with self._lock:
            self.dropped_jobs += 1

    def render(self, queue_depth: int) -> str:
        with self._lock:
            lines: list[str] = []
            _family(lines, "ttsi_requests_total", "counter", "HTTP requests answered, by status code.",
                    [f"ttsi_requests_total{_labels({'code': code})} {n}" for code, n in sorted(self.requests.items())])
            _family(lines, "ttsi_answers_total", "counter", "Inputs the agent answered.",
                    [f"ttsi_answers_total {self.answered}"])
            _family(lines, "ttsi_adapted_total", "counter", "Inputs answered by an adapted model.",
                    [f"ttsi_adapted_total {self.adapted}"])
            share = self.adapted / self.answered if self.answered else 0.0
            _family(lines, "ttsi_adapted_share", "gauge", "Adapted inputs over answered inputs.",
                    [f"ttsi_adapted_share {_num(share)}"])
            _family(lines, "ttsi_dropped_total", "counter", "Queued requests dropped before their batch started "
                    "(client gone or deadline passed).", [f"ttsi_dropped_total {self.dropped_jobs}"])
            _family(lines, "ttsi_queue_depth", "gauge", "Requests waiting for the worker.",
                    [f"ttsi_queue_depth {queue_depth}"])
            stage_lines = [line for stage, h in self.stages.items()
                           for line in h.lines("ttsi_stage_seconds", {"stage": stage})]
            _family(lines, "ttsi_stage_seconds", "histogram", "Per-input seconds in each agent stage.", stage_lines)
            _family(lines, "ttsi_batch_size", "histogram", "Requests per worker batch.",
                    self.batches.lines("ttsi_batch_size", {}))
        return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, kind: str, help: str, samples: list[str]) -> None:
    lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}", *samples]


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)

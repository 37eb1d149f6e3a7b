"""The run directory: `run.json` (what was asked) and `results.jsonl` (one line per item per seed, append-only).

Each record is written with a single `write` on an append-mode descriptor and fsynced before the next item
starts, so a crash or Ctrl-C loses at most the item in flight; a torn last line (killed mid-write) is cut off when
the run resumes. Resuming checks that the settings are the ones the directory was started with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ttsi.errors import ConfigError

RESULTS = "results.jsonl"
RUN = "run.json"
SUMMARY = "summary.json"


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record in a results file (a torn last line is ignored)."""
    return list(_complete_lines(path))


def _complete_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # what follows the last newline: nothing, or a record torn by a kill
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{path}, line {n}, is not a JSON record: the file is corrupt") from None


class RunDir:
    """A run's directory, opened fresh or resumed."""

    def __init__(self, out: str | Path, settings: dict[str, Any], resume: bool):
        self.path = Path(out)
        self.results = self.path / RESULTS
        run_file = self.path / RUN
        if self.results.exists() and self.results.stat().st_size and not resume:
            raise ConfigError(f"{self.path} already holds results: pass --resume to continue that run, "
                              "or choose another --out")
        if resume and run_file.exists():
            before = json.loads(run_file.read_text())
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if changed:
                raise ConfigError(f"cannot resume {self.path}: settings differ from the original run in "
                                  f"{', '.join(changed)}")
        self.path.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(settings, indent=2, sort_keys=True))
        self._drop_torn_tail()
        self.done = {(r["id"], r["seed"]) for r in read_records(self.results)}
        self._fd = os.open(self.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _drop_torn_tail(self) -> None:
        if not self.results.exists():
            return
        data = self.results.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):  # the previous run died while writing this line
            with self.results.open("r+b") as f:
                f.truncate(keep)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        os.write(self._fd, line)
        os.fsync(self._fd)
        self.done.add((record["id"], record["seed"]))

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

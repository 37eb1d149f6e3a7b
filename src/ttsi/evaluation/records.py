"""The run directory: `run.json` (what was asked) and `results.jsonl` (one line per item per seed, append-only).

One process at a time writes a run directory (an OS lock on `.lock`, see lock.py). `run.json` is replaced
atomically, and only when it changes. Each record is written with a single `write` on an append-mode descriptor
and fsynced before the next item starts, so a crash or Ctrl-C loses at most the item in flight; a torn last line
(killed mid-write) is cut off when the run resumes, and a record that failed to write (a full disk) is cut off at
once. Resuming checks that the settings are the ones the directory was started with and that every record is one
of this run's (an item and seed of its plan, made by its method, none twice).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ttsi import jsonio
from ttsi.errors import ConfigError, FileError, TTSIError
from ttsi.evaluation.lock import RunLock

RESULTS = "results.jsonl"
RUN = "run.json"
SUMMARY = "summary.json"

# The fields every record has (ttsi eval's and ttsi score's alike), and the types those read as keys must have.
FIELDS = ("id", "seed", "benchmark", "split", "method", "subsets", "prediction", "raw", "correct", "error",
          "error_detail", "counts", "base_raw", "base_correct", "base_error", "samples", "samples_correct",
          "majority_correct", "pass_correct", "gate", "decision", "adapted", "reason", "synthetic", "rejected",
          "train", "timings")
TYPES: dict[str, tuple[type, str]] = {"id": (str, "a string"), "seed": (int, "an integer"),
                                      "method": (str, "a string"), "correct": (bool, "true or false"),
                                      "adapted": (bool, "true or false")}


def read_records(path: Path, error: type[TTSIError] = ConfigError) -> list[dict[str, Any]]:
    """Every complete record in a results file (a torn last line is ignored); a bad one is `error`."""
    return [record for _, record in numbered_records(path, error)]


def numbered_records(path: Path, error: type[TTSIError] = ConfigError) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every complete record; a file-system problem is a FileError."""
    if not os.path.lexists(path):
        return []
    text = jsonio.read_text(path, "results file", FileError)
    text = text[: text.rfind("\n") + 1]  # what follows the last newline: nothing, or a record torn by a kill
    out = []
    for n, line in jsonio.lines(text):
        try:
            record = jsonio.parse(line)
        except jsonio.BadJSON as e:
            raise error(f"{path}, line {n}, is not a JSON record ({e.msg}): the file is corrupt") from None
        out.append((n, check_record(record, f"{path}, line {n},", error)))
    return out


def check_record(record: Any, where: str, error: type[TTSIError] = ConfigError) -> dict[str, Any]:
    """`record` if it has a record's fields (and the keys' types); else `error` starting with `where`."""
    if not isinstance(record, dict):
        raise error(f"{where} is not a ttsi record: it is a JSON {json_type(record)}, not an object")
    missing = [name for name in FIELDS if name not in record]
    if missing:
        raise error(f"{where} is not a ttsi record: it lacks {', '.join(missing)}")
    for name, (kind, says) in TYPES.items():
        value = record[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise error(f"{where} is not a ttsi record: {name!r} must be {says}, got {json.dumps(value)[:40]}")
    return record


def json_type(value: Any) -> str:
    """What JSON calls the type of a parsed value: object, array, string, number, boolean or null."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: a temporary file beside it, fsynced, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o644)  # as a file written plainly would be (mkstemp makes it private)
            data = text.encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic


def write_summary(run_dir: Path, text: str) -> None:
    """summary.json, written atomically; a file-system failure is one FileError (the records stay as they are)."""
    path = run_dir / SUMMARY
    try:
        write_atomic(path, text)
    except OSError as e:
        raise FileError(f"cannot write {path}: {jsonio.describe_os_error(e)}; the records are saved, and "
                        "running the same command with --resume writes it") from None


class RunDir:
    """A run's directory, opened fresh or resumed, held (locked) until closed.

    `plan`: the (item id, seed) pairs the run is to record; `method`: the method its records carry.
    `resumable`: whether the command can resume (ttsi eval) or not (ttsi score), for the refusal's advice.
    """

    def __init__(self, out: str | Path, settings: dict[str, Any], resume: bool, *,
                 plan: Iterable[tuple[str, int]], method: str, resumable: bool = True):
        self.path = Path(out)
        self.results = self.path / RESULTS
        self.plan = frozenset(plan)
        self.method = method
        self.resumable = resumable
        self._fd: int | None = None
        self._make_dir()
        self._lock = RunLock(self.path)
        try:
            self._open(settings, resume)
        except BaseException:
            self.close()
            raise

    def _make_dir(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise FileError(f"run directory {self.path} is an existing file, not a directory; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FileError(f"cannot create the run directory {self.path}: {jsonio.describe_os_error(e)}") from None

    def _open(self, settings: dict[str, Any], resume: bool) -> None:
        settings = json.loads(json.dumps(settings))  # as run.json will hold them (tuples are lists there)
        size = self._results_size()
        if size and not resume:
            advice = "pass --resume to continue that run, or choose another --out" if self.resumable else \
                "choose another --out or remove it"
            raise ConfigError(f"{self.path} already holds results: {advice}")
        run_file = self.path / RUN
        if resume:
            self._check_settings(run_file, settings, has_results=bool(size))
        self._write_settings(run_file, settings)
        if size:
            self._drop_torn_tail(size)
        self.done = self._check_records() if size else set()
        try:
            self._fd = os.open(self.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise FileError(f"cannot open {self.results}: {jsonio.describe_os_error(e)}") from None

    def _results_size(self) -> int:
        """results.jsonl's size (0 when absent); a directory, device, pipe or broken link there is refused."""
        if not os.path.lexists(self.results):
            return 0
        return jsonio.file_size(self.results, "results file", FileError)

    def _check_settings(self, run_file: Path, settings: dict[str, Any], has_results: bool) -> None:
        if not os.path.lexists(run_file):
            if has_results:
                raise ConfigError(f"cannot resume {self.path}: it holds {RESULTS} but no {RUN}, so nothing says "
                                  "which settings made its records; choose another --out")
            return
        before = jsonio.loads(jsonio.read_text(run_file, "settings file", FileError), str(run_file), ConfigError)
        if not isinstance(before, dict):
            raise ConfigError(f"cannot resume {self.path}: {run_file} holds a JSON {json_type(before)}, "
                              "not the settings object ttsi writes")
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ConfigError(f"cannot resume {self.path}: settings differ from the original run in "
                              f"{', '.join(changed)}")

    def _write_settings(self, run_file: Path, settings: dict[str, Any]) -> None:
        text = json.dumps(settings, indent=2, sort_keys=True)
        for stale in self.path.glob(f".{RUN}.*.tmp"):  # left by a process killed while replacing run.json
            stale.unlink(missing_ok=True)
        try:
            if run_file.is_file() and not run_file.is_symlink() and run_file.read_bytes() == text.encode():
                return
            write_atomic(run_file, text)
        except OSError as e:
            raise FileError(f"cannot write {run_file}: {jsonio.describe_os_error(e)}") from None

    def _drop_torn_tail(self, size: int) -> None:
        """Cut what follows the last newline: the line a killed run was writing."""
        try:
            with self.results.open("r+b") as f:
                end = size
                while end > 0:
                    start = max(0, end - 65536)
                    f.seek(start)
                    at = f.read(end - start).rfind(b"\n")
                    if at >= 0:
                        end = start + at + 1
                        break
                    end = start
                if end != size:
                    f.truncate(end)
        except OSError as e:
            raise FileError(f"cannot repair {self.results}: {jsonio.describe_os_error(e)}") from None

    def _check_records(self) -> set[tuple[str, int]]:
        """The (id, seed) pairs recorded; any record that is not one of this run's is refused, naming its line."""
        done: dict[tuple[str, int], int] = {}
        for n, r in numbered_records(self.results):
            key, where = (r["id"], r["seed"]), f"cannot resume {self.path}: {self.results}, line {n},"
            if key not in self.plan:
                raise ConfigError(f"{where} holds item {r['id']!r} seed {r['seed']}, which is not among this "
                                  "run's items and seeds")
            if key in done:
                raise ConfigError(f"{where} repeats item {r['id']!r} seed {r['seed']} (first on line {done[key]})")
            if r["method"] != self.method:
                raise ConfigError(f"{where} was made by method {r['method']!r}, not {self.method!r}")
            done[key] = n
        return set(done)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably; on failure none of it stays in the file and a FileError says what to do."""
        key = (record["id"], record["seed"])
        if key not in self.plan or key in self.done:
            raise ValueError(f"record {key} is not in the plan or already written")
        assert self._fd is not None, "the run directory is closed"
        data = (jsonio.dumps(record, ensure_ascii=False) + "\n").encode()
        before = os.fstat(self._fd).st_size  # this process alone appends (the lock)
        try:
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):  # failing that, a resume cuts the torn last line off
                os.ftruncate(self._fd, before)  # no partial record; a resume redoes this item
            raise FileError(self._write_failed(e)) from None
        self.done.add(key)

    def _write_failed(self, e: OSError) -> str:
        saved = f"the {len(self.done)} records before it are saved"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            then = ("ttsi eval --resume continues the run once space is freed" if self.resumable
                    else f"free some space, remove {self.path} and run it again")
            return f"the disk holding {self.results} is full (no space left on the device): {saved}; {then}"
        then = "ttsi eval --resume continues the run" if self.resumable else f"remove {self.path} and run it again"
        return f"cannot write {self.results}: {jsonio.describe_os_error(e)}; {saved}; {then}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

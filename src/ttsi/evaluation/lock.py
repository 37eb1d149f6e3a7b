"""One writer per run directory: an OS lock (`flock`) on `.lock` inside it, held while the run is open.

The kernel releases the lock when its holder exits, however it exits (a kill included), so a stale lock never
blocks a resume. The file stays behind; it holds the current (or last) holder's pid, host and start time, which is
what a refused second process names.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ttsi import jsonio
from ttsi.errors import ConfigError, FileError

try:
    import fcntl
except ImportError:  # not POSIX: no locking (ttsi runs on Linux and macOS)
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunLock:
    """The exclusive lock on `directory/.lock`; refused with one ConfigError naming the holder when taken."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise FileError(f"cannot create the lock file {self.path}: {jsonio.describe_os_error(e)}") from None
        try:
            self._take(directory)
        except BaseException:
            self.release()
            raise

    def _take(self, directory: Path) -> None:
        assert self._fd is not None
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{directory} is in use by {self._holder()}; wait for it to finish or choose "
                              "another --out") from None
        except OSError as e:
            raise FileError(f"cannot lock {self.path}: {jsonio.describe_os_error(e)}") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (json.dumps(holder) + "\n").encode(), 0)
        except OSError as e:
            raise FileError(f"cannot write the lock file {self.path}: {jsonio.describe_os_error(e)}") from None

    def _holder(self) -> str:
        """Who holds the lock, as its file says ("another ttsi process" while it has yet to write that)."""
        assert self._fd is not None
        try:
            info = jsonio.parse(os.pread(self._fd, 4096, 0).decode("utf-8"))
            return f"ttsi pid {int(info['pid'])} on host {info['host']} since {info['since']}"
        except (OSError, UnicodeDecodeError, jsonio.BadJSON, TypeError, KeyError, ValueError):
            return "another ttsi process"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

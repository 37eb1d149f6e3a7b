"""Bearer-key authentication (constant-time comparison)."""

from __future__ import annotations

import hmac
import os

from ttsi.errors import ConfigError

OPEN_PATHS = frozenset({"/health"})  # the only route served without the key


def key_from_env(var: str | None) -> str | None:
    """The API key held by environment variable `var`; None when no variable is named; ConfigError when it is
    named but unset or empty (a server the operator meant to protect must not start open)."""
    if not var:
        return None
    key = os.environ.get(var, "")
    if not key:
        raise ConfigError(f"--api-key-env {var}: the environment variable is unset or empty")
    return key


def authorized(header: str | None, key: str | None) -> bool:
    """Whether an `Authorization` header carries `Bearer <key>` (always true without a key)."""
    if key is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), key.encode())


def needs_key(path: str) -> bool:
    return path.rstrip("/") not in OPEN_PATHS

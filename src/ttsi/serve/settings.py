"""The server's settings: queueing, deadlines, auth and the request limits."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ttsi.config import AgentConfig
from ttsi.errors import ConfigError
from ttsi.formats import get_format, native_format

if TYPE_CHECKING:
    from ttsi.model import HFModel

MAX_BODY_BYTES = 4 * 1024 * 1024  # a request body past this is refused with 413
MAX_MESSAGES = 256  # messages in one request (400 past it)
MAX_TOOLS = 128  # tools in one request (400 past it)
MAX_TOKENS = 2048  # the most `max_tokens` a request may ask for (400 past it)
MAX_STOP = 4  # stop strings, as OpenAI


@dataclass
class ServeSettings:
    """Everything the server depends on besides the model itself."""

    model_name: str  # what requests must name in `model`
    agent: AgentConfig = field(default_factory=AgentConfig)  # the default config; requests may change a few fields
    format: str = "json"  # the answer format every request is prompted and parsed in ("auto": the model's own)
    max_batch: int = 16  # requests answered together in one respond_batch call
    max_queue: int = 256  # requests waiting for the worker; past it: 429
    batch_wait_ms: float = 10.0  # how long the worker waits for a batch to fill once a request arrived
    timeout_s: float = 120.0  # each request's deadline, queueing included: 504 past it
    api_key: str | None = None  # when set, every route but /health needs `Authorization: Bearer <key>`
    max_body_bytes: int = MAX_BODY_BYTES
    max_messages: int = MAX_MESSAGES
    max_tools: int = MAX_TOOLS
    max_tokens: int = MAX_TOKENS

    def for_model(self, model: HFModel) -> ServeSettings:
        """These settings with format `auto` resolved: the model's native tool-call format, else `json`."""
        if self.format != "auto":
            return self
        return dataclasses.replace(self, format=native_format(model) or "json")

    def validate(self) -> ServeSettings:
        """Raise ConfigError naming the first setting that cannot work (the agent config included)."""
        self.agent.validate()
        try:
            fmt = get_format(self.format) if self.format != "auto" else None  # auto: from the chat template
        except Exception as e:  # TaskError: an unknown format is a setting problem here
            raise ConfigError(str(e)) from None
        if fmt is not None and fmt.kind != "tools":
            raise ConfigError(f"--tool-parser {fmt.name!r} is a free-form answer format ({fmt.kind}); the server "
                              "answers tool-call requests (choose json, hermes, llama3_json, mistral or pythonic)")
        counts = {"--max-batch": self.max_batch, "--max-queue": self.max_queue, "max body bytes": self.max_body_bytes,
                  "max messages": self.max_messages, "max tools": self.max_tools, "max tokens": self.max_tokens}
        for name, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name, value in {"--batch-wait-ms": self.batch_wait_ms, "--timeout-s": self.timeout_s}.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout-s must be positive, got {self.timeout_s}")
        if self.agent.max_new_tokens > self.max_tokens:
            raise ConfigError(f"the default answer budget {self.agent.max_new_tokens} exceeds the max tokens limit "
                              f"{self.max_tokens}")
        if self.agent.method == "oracle":
            raise ConfigError("method oracle trains on the gold answer, which requests do not carry")
        return self

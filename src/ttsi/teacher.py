"""TT-D: a stronger teacher writes the synthetic pairs, through any OpenAI-compatible chat endpoint."""

from __future__ import annotations

import os
from typing import Any

from ttsi.augment import OneByOne, Synthesis, select_pairs
from ttsi.config import SynthesisConfig, TeacherConfig
from ttsi.errors import TeacherError
from ttsi.formats import AnswerFormat
from ttsi.prompts import synthesis_messages
from ttsi.task import Task

# Sent when the endpoint accepts them; dropped for the session once it refuses one (reasoning models refuse
# temperature and top_p, older servers refuse max_completion_tokens or seed).
_OPTIONAL = ("temperature", "top_p", "seed", "max_completion_tokens")


class TeacherSynthesizer(OneByOne):
    """Same prompt and validation as TT-SI; only the writer changes."""

    source = "teacher"

    def __init__(self, teacher: TeacherConfig, synthesis: SynthesisConfig, client: Any = None):
        if not (teacher.url and teacher.model):
            raise TeacherError("a teacher needs both a URL and a model name")
        self.teacher = teacher
        self.config = synthesis
        self._client = client
        self._refused: set[str] = set()

    @property
    def client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            key = os.environ.get(self.teacher.api_key_env) or "EMPTY"  # local servers take any key
            self._client = OpenAI(base_url=self.teacher.url, api_key=key, timeout=self.teacher.timeout_s,
                                  max_retries=self.teacher.retries)
        return self._client

    def check(self) -> None:
        """Fail fast with one clear message if the teacher cannot serve: unreachable, key refused, model absent."""
        import openai

        url, name = self.teacher.url, self.teacher.model
        try:
            served = [m.id for m in self.client.with_options(max_retries=0, timeout=min(10.0, self.teacher.timeout_s))
                      .models.list()]
        except openai.NotFoundError:
            return  # the endpoint has no model list; the first request will tell
        except openai.AuthenticationError:
            raise TeacherError(f"the teacher at {url} refused the API key (set ${self.teacher.api_key_env})") from None
        except openai.APIConnectionError as e:
            raise TeacherError(f"cannot reach the teacher at {url}: {e}") from None
        except openai.APIError as e:
            raise TeacherError(f"the teacher at {url} failed its check: {e}") from None
        if served and name not in served:
            raise TeacherError(f"the teacher at {url} does not serve model {name!r}; it serves: {', '.join(served)}")

    def synthesize(self, task: Task, fmt: AnswerFormat, seed: int) -> Synthesis:
        """Drafts from the teacher; a failed request yields no pairs and an `error` (the agent answers unadapted)."""
        import openai

        c = self.config
        n = c.k * c.oversample if c.temperature > 0 else 1
        params: dict[str, Any] = {"temperature": c.temperature, "top_p": c.top_p, "seed": seed,
                                  "max_completion_tokens": c.max_new_tokens}
        while True:
            sent = {k: v for k, v in params.items() if k not in self._refused}
            if "max_completion_tokens" in self._refused:
                sent["max_tokens"] = c.max_new_tokens  # the older name of the same budget
            try:
                reply = self.client.chat.completions.create(model=self.teacher.model,
                                                            messages=synthesis_messages(task, fmt), n=n, **sent)
                break
            except openai.BadRequestError as e:
                refused = next((p for p in _OPTIONAL if p in sent and p in str(e)), None)
                if refused is None:
                    return Synthesis([], error=f"teacher rejected the request: {e}")
                self._refused.add(refused)
            except openai.APIError as e:
                return Synthesis([], error=f"teacher failed: {type(e).__name__}: {e}")
        drafts = [choice.message.content or "" for choice in reply.choices]
        return select_pairs(drafts, task, fmt, c.k, self.source)

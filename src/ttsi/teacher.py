"""TT-D: a stronger teacher writes the synthetic pairs, through any OpenAI-compatible chat endpoint.

Replies are read from the raw HTTP body with `ttsi.jsonio`, never through the SDK's lenient parsing: for a 200 body
that is not a chat completion the SDK returns a `str`, a list, or a model whose missing fields are None, or raises
JSONDecodeError, RecursionError or ValueError. Here every such reply is one short reason instead.
"""

from __future__ import annotations

import os
from typing import Any

from ttsi import jsonio
from ttsi.augment import OneByOne, Synthesis, select_pairs
from ttsi.config import SynthesisConfig, TeacherConfig
from ttsi.errors import ConfigError, TeacherError
from ttsi.formats import AnswerFormat
from ttsi.prompts import synthesis_messages
from ttsi.task import Task
from ttsi.verify import check_task

# Sent when the endpoint accepts them; dropped for the session once it refuses one (reasoning models refuse
# temperature and top_p, older servers refuse max_completion_tokens or seed).
_OPTIONAL = ("temperature", "top_p", "seed", "max_completion_tokens")
_MAX_REASON = 200  # characters of an error message carried into a reason
_MAX_LISTED = 20  # served models named when the configured one is absent


class BadReply(ValueError):
    """A 200 reply whose body is not a usable chat completion; the message says what is wrong."""


def _short(e: BaseException) -> str:
    """An exception's message on one line, cut to a length fit for a reason."""
    text = " ".join(str(e).split())
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "..."


def read_drafts(body: str, n: int) -> list[str]:
    """The message contents of the first `n` choices of a chat-completion body; BadReply when it is not one.

    A message whose content is null (a refusal, or tool calls only) is an empty draft, which validation rejects.
    """
    try:
        reply = jsonio.parse(body)
    except jsonio.BadJSON as e:
        raise BadReply(f"not JSON ({e.msg})") from None
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices:
        raise BadReply("no list of choices")
    drafts = []
    for choice in choices[:n]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise BadReply("a choice without a message")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise BadReply(f"a message content that is {type(content).__name__}, not text")
        drafts.append(content or "")
    return drafts


def read_model_ids(body: str) -> list[str] | None:
    """The model ids of a `/v1/models` body, or None when it is not a readable model list."""
    try:
        listing = jsonio.parse(body)
    except jsonio.BadJSON:
        return None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        return None
    return [m["id"] for m in data]


class TeacherSynthesizer(OneByOne):
    """Same prompt and validation as TT-SI; only the writer changes."""

    source = "teacher"

    def __init__(self, teacher: TeacherConfig, synthesis: SynthesisConfig, client: Any = None):
        if not (teacher.url and teacher.model):
            raise TeacherError("a teacher needs both a URL and a model name")
        self.teacher = teacher
        if "consistency" in synthesis.verify:  # AgentConfig.validate says so first for a configured teacher
            raise ConfigError("the consistency verifier needs the model that wrote the pairs; a teacher endpoint "
                              "has none here (verify with schema instead)")
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
        """Fail fast with one clear TeacherError if the teacher cannot serve: unreachable, key refused, model absent.

        Returns when the teacher lists the model, or has no readable model list (a 404, or a 200 body that is not
        a list of models with string ids): then the first request tells. Raises nothing but TeacherError.
        """
        import openai

        url, name = self.teacher.url, self.teacher.model
        try:
            client = self.client.with_options(max_retries=0, timeout=min(10.0, self.teacher.timeout_s))
            served = read_model_ids(client.models.with_raw_response.list().text)
        except openai.NotFoundError:
            return  # the endpoint has no model list; the first request will tell
        except openai.AuthenticationError:
            raise TeacherError(f"the teacher at {url} refused the API key (set ${self.teacher.api_key_env})") from None
        except openai.APIConnectionError as e:
            raise TeacherError(f"cannot reach the teacher at {url}: {_short(e)}") from None
        except openai.APIError as e:
            raise TeacherError(f"the teacher at {url} failed its check: {_short(e)}") from None
        except Exception as e:  # whatever else a broken reply raises inside the SDK
            raise TeacherError(f"the teacher at {url} failed its check: {type(e).__name__}: {_short(e)}") from None
        if served and name not in served:
            listed = ", ".join(served[:_MAX_LISTED]) + (f" and {len(served) - _MAX_LISTED} more"
                                                       if len(served) > _MAX_LISTED else "")
            raise TeacherError(f"the teacher at {url} does not serve model {name!r}; it serves: {listed}")

    def synthesize(self, task: Task, fmt: AnswerFormat, seed: int) -> Synthesis:
        """Drafts from the teacher; a failed request or an unusable reply yields no pairs and an `error` (the agent
        answers unadapted). Never raises for anything the teacher sends."""
        import openai

        c = self.config
        check_task(c.verify, task)  # before the request
        n = c.k * c.oversample if c.temperature > 0 else 1
        params: dict[str, Any] = {"temperature": c.temperature, "top_p": c.top_p, "seed": seed,
                                  "max_completion_tokens": c.max_new_tokens}
        while True:
            sent = {k: v for k, v in params.items() if k not in self._refused}
            if "max_completion_tokens" in self._refused:
                sent["max_tokens"] = c.max_new_tokens  # the older name of the same budget
            try:
                reply = self.client.chat.completions.with_raw_response.create(
                    model=self.teacher.model, messages=synthesis_messages(task, fmt), n=n, **sent)
                drafts = read_drafts(reply.text, n)
                break
            except openai.BadRequestError as e:
                refused = next((p for p in _OPTIONAL if p in sent and p in str(e)), None)
                if refused is None:
                    return Synthesis([], error=f"teacher rejected the request: {_short(e)}")
                self._refused.add(refused)
            except openai.APIError as e:
                return Synthesis([], error=f"teacher failed: {type(e).__name__}: {_short(e)}")
            except BadReply as e:
                return Synthesis([], error=f"teacher's reply is not a chat completion: {e}")
            except Exception as e:  # whatever else a broken reply raises inside the SDK
                return Synthesis([], error=f"teacher failed: {type(e).__name__}: {_short(e)}")
        return select_pairs(drafts, task, fmt, c.k, self.source, c.verify)

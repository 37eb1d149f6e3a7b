"""The bounded request queue and the one worker thread that answers it in batches.

One process, one model, one worker. The worker takes up to `max_batch` requests (waiting up to `batch_wait_ms`
for the batch to fill once a request arrived), drops those whose client gave up (deadline passed or disconnected:
their future was cancelled before the batch started), groups the rest by effective agent config, and calls
`respond_batch` once per group. Agent scheme: the worker keeps one agent, for the config it last served (at start,
the server's default); a group with another config closes it (taking its LoRA slots out of the model) and creates
the agent for that config, so exactly one agent owns the model's adapter slots at any time. Every adapter is reset
inside `respond_batch`, so nothing a request trained outlives its batch.

Answers do not depend on arrival order or batch company: each task's id is derived from the request content, and
the agent's per-input seed from the id and the config's seed. A request the gate is confident about is answered
right after the gate (`respond_batch(on_answer=...)`), without waiting for its batch's adaptations.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

from ttsi import jsonio
from ttsi.agent import SelfImprovingAgent
from ttsi.config import AgentConfig
from ttsi.errors import TTSIError
from ttsi.model import HFModel
from ttsi.serve.metrics import Metrics
from ttsi.serve.protocol import Outcome
from ttsi.task import Task
from ttsi.trace import Response

log = logging.getLogger("ttsi.serve")


class QueueFull(Exception):
    """The queue holds `max_queue` requests already."""


@dataclass
class Job:
    """One request waiting for the worker."""

    task: Task
    config: AgentConfig
    deadline: float  # time.monotonic() past which nobody waits for the answer
    future: Future[Outcome] = field(default_factory=Future)

    @property
    def key(self) -> str:
        return config_key(self.config)


def config_key(config: AgentConfig) -> str:
    return jsonio.dumps(config.to_dict(), sort_keys=True)


class Batcher:
    """Queue plus worker thread; `submit` from any thread, results arrive on each job's future."""

    def __init__(self, model: HFModel, default: AgentConfig, max_batch: int = 16, max_queue: int = 256,
                 batch_wait_ms: float = 10.0, metrics: Metrics | None = None):
        self.model, self.default = model, default
        self.max_batch, self.max_queue, self.batch_wait = max_batch, max_queue, batch_wait_ms / 1000
        self.metrics = metrics or Metrics()
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._held = 0
        # the default agent now, so that what it loads (the token gate's profile) is checked before serving
        self._agent: SelfImprovingAgent | None = SelfImprovingAgent(model, default)
        self._agent_key: str | None = config_key(default)
        self._thread = threading.Thread(target=self._run, name="ttsi-serve-worker", daemon=True)

    # ---- the queue -----------------------------------------------------------------------------------------------

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def submit(self, task: Task, config: AgentConfig, timeout_s: float) -> Job:
        """Queue one request; QueueFull when `max_queue` are waiting."""
        job = Job(task, config, time.monotonic() + timeout_s)
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue holds {self.max_queue} requests")
            self._queue.append(job)
            self._cond.notify_all()
        return job

    @property
    def depth(self) -> int:
        return len(self._queue)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the worker from taking new batches while inside (tests, maintenance); the queue still fills."""
        with self._cond:
            self._held += 1
        try:
            yield
        finally:
            with self._cond:
                self._held -= 1
                self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker after its current batch, fail what is queued, and close the agent."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        while self._queue:
            job = self._queue.popleft()
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        if self._agent is not None and not self._thread.is_alive():
            self._agent.close()
            self._agent = None

    # ---- the worker ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                try:
                    self._answer(batch)
                except BaseException as e:  # never leave a future unresolved, never let the worker die silently
                    log.exception("the worker failed on a batch")
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(e)

    def _take(self) -> list[Job] | None:
        """The next batch of live jobs (possibly empty: all dropped), or None when stopping."""
        with self._cond:
            while (not self._queue or self._held) and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            end = time.monotonic() + self.batch_wait
            while len(self._queue) < self.max_batch and not self._stopping and not self._held:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = []
            now = time.monotonic()
            while self._queue and len(batch) < self.max_batch:
                job = self._queue.popleft()
                if job.deadline <= now:
                    job.future.cancel()
                if job.future.set_running_or_notify_cancel():  # False: cancelled (gone or past its deadline)
                    batch.append(job)
                else:
                    self.metrics.dropped()
            return batch

    def _answer(self, batch: list[Job]) -> None:
        groups: dict[str, list[Job]] = {}
        for job in batch:
            groups.setdefault(job.key, []).append(job)
        self.metrics.batch(len(batch))
        for key, jobs in groups.items():
            self._group(key, jobs)

    def _group(self, key: str, jobs: list[Job]) -> None:
        """One respond_batch call; each request's answer is sent as soon as it is final, so the confident ones do
        not wait for the others' synthesis and training."""
        agent = self._agent_for(key, jobs[0].config)

        def answered(i: int, response: Response) -> None:
            prompt, completion = self.model.count_tokens([response.scoring_prompt, response.raw])
            self.metrics.response(response)
            jobs[i].future.set_result(Outcome(response, prompt, completion))

        try:
            agent.respond_batch([j.task for j in jobs], on_answer=answered)
        except Exception as e:
            left = [job for job in jobs if not job.future.done()]
            if len(jobs) > 1:  # one bad input must not fail its company: answer each alone
                for job in left:
                    self._group(key, [job])
                return
            if not isinstance(e, TTSIError):  # a bad input is the client's; anything else goes to the log
                log.exception("respond_batch failed")
            for job in left:
                job.future.set_exception(e)

    def _agent_for(self, key: str, config: AgentConfig) -> SelfImprovingAgent:
        """The agent for this config: the current one, or (closing it first) a new one."""
        if self._agent is not None and self._agent_key == key:
            return self._agent
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        self._agent, self._agent_key = SelfImprovingAgent(self.model, config), key
        return self._agent

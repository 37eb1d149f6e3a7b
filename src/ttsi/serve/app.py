"""The FastAPI app: `/v1/chat/completions`, `/v1/models`, `/health`, `/metrics`; every error an OpenAI error object.

Request bodies are read raw and parsed with `ttsi.jsonio` (never by FastAPI/pydantic): deep nesting, 5,000-digit
integers, NaN and lone surrogates are a 400 like any other malformed body. A streamed reply is computed whole and
then sent as `chat.completion.chunk` events (the agent decides, trains and answers before a token is known).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ttsi import jsonio
from ttsi.errors import TeacherError, TTSIError
from ttsi.formats import get_format
from ttsi.model import HFModel
from ttsi.serve import protocol
from ttsi.serve.batcher import Batcher, Job, QueueFull
from ttsi.serve.metrics import Metrics
from ttsi.serve.protocol import APIError, error_body
from ttsi.serve.security import authorized, needs_key
from ttsi.serve.settings import ServeSettings

log = logging.getLogger("ttsi.serve")
POLL_S = 0.05  # how often a waiting request checks its deadline and whether its client is still there
GENERIC_500 = "The server had an error while processing your request."
CLIENT_GONE = 499  # nginx's code for a client that closed the connection first (never delivered)


class Guard:
    """ASGI middleware: the API key on every route but /health, a generic 500 (traceback to the log only) for
    anything unexpected, and the status-code counts. Pure ASGI, so that routes see client disconnects."""

    def __init__(self, app: ASGIApp, api_key: str | None, metrics: Metrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        if needs_key(scope["path"]) and not authorized(header, self.api_key):
            error = APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                             code="invalid_api_key")
            await error_response(error)(scope, receive, send)
            self.metrics.request(401)
            return
        status: list[int] = []

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope["path"])
            if status:  # the response had started: nothing more can be said to the client
                raise
            await json_response(error_body(GENERIC_500, "server_error"), 500)(scope, receive, send)
            status.append(500)
        self.metrics.request(status[0] if status else CLIENT_GONE)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonio.dumps(body, ensure_ascii=False), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(e: APIError) -> Response:
    return json_response(e.body(), e.status, e.headers)


def create_app(model: HFModel, settings: ServeSettings) -> FastAPI:
    """The app serving `model`; its worker starts and stops with the app's lifespan (`app.state.batcher`)."""
    settings = settings.for_model(model).validate()
    metrics = Metrics()
    batcher = Batcher(model, settings.agent, settings.max_batch, settings.max_queue, settings.batch_wait_ms, metrics)
    fmt = get_format(settings.format)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.close)

    app = FastAPI(title="ttsi serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, api_key=settings.api_key, metrics=metrics)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> Response:
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        message = f"Unknown route: {request.method} {request.url.path}" if e.status_code == 404 else str(e.detail)
        return json_response(error_body(message, "invalid_request_error", None,
                                        "not_found" if e.status_code == 404 else None), e.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> Response:
        return json_response(error_body(f"Invalid request: {e.errors()}"), 400)

    @app.exception_handler(TTSIError)
    async def ttsi_error(request: Request, e: TTSIError) -> Response:
        return json_response(error_body(str(e)), 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> Response:  # `Guard` normally answers these first
        return json_response(error_body(GENERIC_500, "server_error"), 500)

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok", "model": settings.model_name, "queue_depth": batcher.depth})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(batcher.depth), media_type="text/plain; version=0.0.4; charset=utf-8")

    def model_card() -> dict[str, Any]:
        return {"id": settings.model_name, "object": "model", "created": started, "owned_by": "ttsi"}

    @app.get("/v1/models")
    async def models() -> Response:
        return json_response({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str) -> Response:
        if name != settings.model_name:
            raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return json_response(model_card())

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = protocol.parse_body(await _read_body(request, settings.max_body_bytes))
        req = protocol.parse_chat(body, settings)
        try:
            job = batcher.submit(req.task, req.config, settings.timeout_s)
        except QueueFull:
            raise APIError(429, f"The server is busy ({settings.max_queue} requests queued); retry shortly",
                           "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}) from None
        outcome = await _wait(job, request)
        if outcome is None:
            return Response(status_code=CLIENT_GONE)
        if outcome.response.error == "context_length":
            raise APIError(400, f"This request does not fit in the model's context window: {outcome.response.reason}",
                           param="messages", code="context_length_exceeded")
        reply = protocol.make_reply(outcome, req, fmt, req.config.max_new_tokens)
        if not req.stream:
            return json_response(protocol.completion(outcome, req, reply, settings.model_name))
        events = protocol.chunks(outcome, req, reply, settings.model_name)
        return StreamingResponse(_sse(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, 413 past `limit` bytes (announced or actually sent)."""
    too_large = APIError(413, f"The request body exceeds {limit:,} bytes", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_large
        parts.append(part)
    return b"".join(parts)


async def _wait(job: Job, request: Request) -> protocol.Outcome | None:
    """The job's outcome; 504 past its deadline; None when the client left first (the job is dropped if it has
    not started)."""
    waiting = asyncio.wrap_future(job.future)
    waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even when nobody awaits it
    while True:
        left = job.deadline - time.monotonic()
        if left <= 0:
            job.future.cancel()  # dropped if still queued; a running batch finishes and its answer is discarded
            raise APIError(504, "The request did not complete before the server's deadline", "timeout_error",
                           code="timeout")
        done, _ = await asyncio.wait({waiting}, timeout=min(POLL_S, left))
        if done:
            error = waiting.exception()
            if isinstance(error, TeacherError):  # the teacher is the server's upstream, not the client's fault
                raise APIError(502, f"The TT-D teacher failed: {error}", "server_error", code="teacher_error")
            if isinstance(error, TTSIError):
                raise APIError(400, str(error)) from None
            if error is not None:
                raise error
            return waiting.result()
        if await request.is_disconnected():
            job.future.cancel()
            return None


def _sse(events: list[dict[str, Any]]) -> Iterator[str]:
    for event in events:
        yield f"data: {jsonio.dumps(event, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"

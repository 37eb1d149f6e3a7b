"""`ttsi serve`: the self-improving agent behind an OpenAI-compatible chat completions endpoint.

Routes: `POST /v1/chat/completions`, `GET /v1/models` (and `/v1/models/{id}`), `GET /health` (never needs the
key), `GET /metrics` (Prometheus text).

Every error is an OpenAI error object `{"error": {"message", "type", "param", "code"}}`: 400 malformed body or bad
setting (code `context_length_exceeded` for a prompt past the model's window), 401 missing or wrong key
(`invalid_api_key`), 404 unknown model (`model_not_found`) or route (`not_found`), 413 body past the limit
(`request_too_large`), 429 queue full (`queue_full`, with `Retry-After`), 502 the TT-D teacher failed
(`teacher_error`), 504 deadline passed (`timeout`), 500 anything unexpected (generic message; the traceback goes
to the server log).

Request semantics are in `protocol` (tools and `tool_choice`, temperature and top_p, `stop`,
`max_tokens`, the `ttsi` extension and trace); batching and the agent scheme in `batcher`; limits in `settings`.
A streamed reply is computed whole, then sent as `chat.completion.chunk` events and `data: [DONE]`.

Modules, one job each: `settings` (server settings and limits), `protocol` (OpenAI request/response conversion and
error objects), `batcher` (the bounded queue and the one worker thread that batches requests into the agent),
`metrics` (Prometheus text), `security` (API key check), `app` (the FastAPI app and its routes). FastAPI and
uvicorn are imported only by `app` and by the `ttsi serve` command (the optional extra `ttsi[serve]`).
"""

from __future__ import annotations

from ttsi.serve.settings import ServeSettings

__all__ = ["ServeSettings"]

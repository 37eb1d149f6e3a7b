"""A real OpenAI-compatible chat endpoint on loopback, serving a tiny model, for the TT-D teacher tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ttsi.model import HFModel


def free_port() -> int:
    """A loopback port nothing listens on (to test an unreachable teacher)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChatServer:
    """`/v1/models` and `/v1/chat/completions` over HTTP; `fail_status`, `refuse`, `raw_reply` and `raw_models`
    inject faults."""

    def __init__(self, model: HFModel, name: str = "tiny-teacher"):
        self.model, self.name = model, name
        self.fail_status: int | None = None  # answer every completion with this HTTP status
        self.refuse: set[str] = set()  # request parameters answered with a 400 naming them
        self.raw_reply: bytes | None = None  # sent as the 200 body of every completion, instead of a real one
        self.raw_models: bytes | None = None  # sent as the 200 body of `/v1/models`
        self.raw_type = "application/json"  # the Content-Type of the raw bodies
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)  # quick shutdown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(body)
        if self.fail_status:
            return self.fail_status, {"error": {"message": "injected failure", "type": "server_error"}}
        for param in self.refuse & set(body):
            return 400, {"error": {"message": f"Unsupported parameter: '{param}'", "type": "invalid_request_error"}}
        if body.get("model") != self.name:
            return 404, {"error": {"message": f"model {body.get('model')} not found"}}
        prompt = self.model.chat_prompt(body["messages"])
        with self._lock:  # one generation at a time on the shared model
            texts = self.model.generate(
                [prompt], max_new_tokens=body.get("max_completion_tokens") or body.get("max_tokens") or 128,
                temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                num_return_sequences=body.get("n", 1) if body.get("temperature", 1.0) > 0 else 1,
                seed=body.get("seed"))
        choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": t}}
                   for i, t in enumerate(texts)]
        return 200, {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                     "model": self.name, "choices": choices,
                     "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any] | bytes,
                      content_type: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models" and server.raw_models is not None:
                    self._send(200, server.raw_models, server.raw_type)
                elif self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model",
                                                                 "created": 0, "owned_by": "test"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if server.raw_reply is not None:
                    server.requests.append(body)
                    self._send(200, server.raw_reply, server.raw_type)
                else:
                    self._send(*server.complete(body))

        return Handler

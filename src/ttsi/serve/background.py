"""`ttsi serve` inside another program: the app on a loopback port, in a background thread (tests, benchmarks,
notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from ttsi.model import HFModel
from ttsi.serve.settings import ServeSettings


class BackgroundServer:
    """`with BackgroundServer(model, settings) as s:` serves at `s.url` (.../v1) until the block ends."""

    def __init__(self, model: HFModel, settings: ServeSettings, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        from ttsi.serve.app import create_app

        self.app = create_app(model, settings)
        self.sock = socket.socket()
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    @property
    def batcher(self) -> Any:
        return self.app.state.batcher

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()

"""`ttsi serve`: the self-improving agent behind an OpenAI-compatible endpoint (needs the `ttsi[serve]` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from ttsi.cli_common import (
    DEVICE,
    DTYPE,
    EPOCHS,
    LR,
    MAX_NEW_TOKENS,
    MEASURE,
    METHOD,
    REFERENCE,
    TAU,
    TEACHER_KEY_ENV,
    TEACHER_MODEL,
    TEACHER_URL,
    TOKEN_COUNT,
    TOKEN_PERCENTILE,
    TOKEN_SHARE,
    TOKEN_STAT,
    K,
    cli_errors,
    gate_config,
    quiet_libraries,
)
from ttsi.config import AgentConfig, GateConfig, LearnConfig, SynthesisConfig, TeacherConfig
from ttsi.errors import ConfigError

INSTALL_HINT = "ttsi serve needs FastAPI and uvicorn: pip install 'ttsi[serve]'"


def served_name(model: str | None) -> str:
    """The name requests must give in `model`: a local directory's name, or the Hugging Face id as given."""
    if model is None:
        from ttsi.sealshift.recipe import MODELS

        return MODELS["base"].name
    path = Path(model).expanduser()
    return path.resolve().name if path.exists() else model


def serve_command(
    model: str | None = typer.Option(None, "--model", help="Hugging Face model id or local directory (default: the "
                                                           "embedded SealShift model)."),
    name: str | None = typer.Option(None, "--served-name", help="The model name clients send (default: the model "
                                                                "directory's name, or the id)."),
    method: str = METHOD,
    tau: float = TAU,
    measure: str = MEASURE,
    reference: str | None = REFERENCE,
    token_stat: str = TOKEN_STAT,
    token_percentile: float = TOKEN_PERCENTILE,
    token_count: int | None = TOKEN_COUNT,
    token_share: float | None = TOKEN_SHARE,
    k: int = K,
    epochs: int = EPOCHS,
    lr: float = LR,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = typer.Option(AgentConfig.seed, help="Default seed (a request's `seed` replaces it)."),
    answer_format: str = typer.Option("auto", "--tool-parser", "--format",
                                      help="The tool-call format the model is prompted and parsed in: auto (the chat "
                                           "template's own: hermes, llama3_json, mistral, pythonic; json when it has "
                                           "none), or any registered format name."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="Require 'Authorization: Bearer <key>' with "
                                           "the key this environment variable holds (every route but /health)."),
    teacher_url: str | None = TEACHER_URL,
    teacher_model: str | None = TEACHER_MODEL,
    teacher_key_env: str = TEACHER_KEY_ENV,
    max_batch: int = typer.Option(16, help="Requests answered together in one batch."),
    max_queue: int = typer.Option(256, help="Requests that may wait; past it the server answers 429."),
    batch_wait_ms: float = typer.Option(10.0, help="How long a batch waits to fill once a request arrived."),
    timeout_s: float = typer.Option(120.0, help="Each request's deadline, queueing included (504 past it)."),
    dtype: str = DTYPE,
    device: str | None = DEVICE,
) -> None:
    """Serve the self-improving agent as an OpenAI-compatible chat completions endpoint (see README)."""
    from ttsi.serve.security import key_from_env
    from ttsi.serve.settings import ServeSettings

    gate = gate_config(tau, measure, GateConfig.candidates, GateConfig.normalize, reference, token_stat,
                       token_percentile, token_count, token_share)
    config = AgentConfig(method=method, gate=gate, synthesis=SynthesisConfig(k=k),
                         teacher=TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_key_env),
                         learn=LearnConfig(epochs=epochs, lr=lr), max_new_tokens=max_new_tokens, seed=seed)
    settings = ServeSettings(model_name=name or served_name(model), agent=config, format=answer_format,
                             max_batch=max_batch, max_queue=max_queue, batch_wait_ms=batch_wait_ms,
                             timeout_s=timeout_s, api_key=key_from_env(api_key_env)).validate()
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {port}")
    if not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn")):
        raise ConfigError(INSTALL_HINT)
    quiet_libraries()
    if config.uses_teacher:  # an unreachable teacher fails in a second, before the model loads
        from ttsi.teacher import TeacherSynthesizer

        TeacherSynthesizer(config.teacher, config.synthesis).check()
    import uvicorn

    from ttsi.model import HFModel
    from ttsi.sealshift.recipe import MODELS
    from ttsi.serve.app import create_app

    if settings.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host} without --api-key-env: anyone who can reach it can use it", err=True)
    loaded = HFModel.from_pretrained(model or str(MODELS["base"]), dtype=dtype, device=device)
    settings = settings.for_model(loaded)
    typer.echo(f"serving {settings.model_name} at http://{host}:{port}/v1 (method {method}, tau {tau}, "
               f"tool calls {settings.format}, max batch {max_batch})", err=True)
    uvicorn.run(create_app(loaded, settings), host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(cli_errors(serve_command))

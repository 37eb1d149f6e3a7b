"""What the `ttsi` commands share: error handling, quiet libraries, and the options common to several commands."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ttsi.config import METHODS, AgentConfig, GateConfig, LearnConfig, SynthesisConfig, TeacherConfig
from ttsi.errors import TTSIError
from ttsi.jsonio import clean_text, describe_os_error

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(fn: F) -> F:
    """One clear line and exit code 2 for bad input; 130 on Ctrl-C; never a traceback for either.

    A file-system error that no reader turned into a TTSIError (a disk that fills, a directory that cannot be
    created) still gets one line, naming the path.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TTSIError as e:
            typer.echo(f"error: {clean_text(str(e))}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:
            path = f"{e.filename}: " if e.filename else ""
            typer.echo(f"error: {clean_text(path + describe_os_error(e))}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def quiet_libraries() -> None:
    """Library warnings and loading bars off: stderr carries our own messages only."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation chatter between peft and transformers
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def gate_config(tau: float, measure: str, candidates: str, normalize: str, reference: str | None = None,
                token_stat: str = GateConfig.token_stat, token_percentile: float = GateConfig.token_percentile,
                token_count: int | None = GateConfig.token_count, token_share: float | None = None) -> GateConfig:
    """The gate's settings from the command's options; a token share given replaces the position count."""
    return GateConfig(tau=tau, measure=measure, candidates=candidates, normalize=normalize, reference=reference,
                      token_stat=token_stat, token_percentile=token_percentile,
                      token_count=None if token_share is not None else token_count, token_share=token_share)


MODEL = typer.Option(..., "--model", help="Hugging Face model id or local directory.")
DTYPE = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
DEVICE = typer.Option(None, help="cuda, cpu, cuda:1, ... (default: cuda when available).")
MEASURE = typer.Option(GateConfig.measure, help="Gate confidence: margin (RSS, the paper), entropy, perplexity, "
                                                 "or token (the greedy answer's per-token certainty against "
                                                 "--reference).")
REFERENCE = typer.Option(GateConfig.reference, "--reference",
                         help="Token gate: the reference profile (ttsi calibrate --profile writes it).")
TOKEN_STAT = typer.Option(GateConfig.token_stat, help="Token gate statistic: top1, margin or entropy.")
TOKEN_PERCENTILE = typer.Option(GateConfig.token_percentile,
                                help="Token gate: a position is unsure below this percentile of the reference.")
TOKEN_COUNT = typer.Option(GateConfig.token_count, help="Token gate: uncertain with at least this many unsure "
                                                        "positions.")
TOKEN_SHARE = typer.Option(GateConfig.token_share, help="Token gate: uncertain with at least this share of unsure "
                                                        "positions (replaces --token-count).")
CANDIDATES = typer.Option(GateConfig.candidates, help="Candidate actions: name (answer prefix naming each function) "
                                                     "or call.")
NORMALIZE = typer.Option(GateConfig.normalize, help="Candidate log-prob: sum over tokens, or mean (length-normalised).")


TAU = typer.Option(GateConfig.tau, help="Adapt when the gate's confidence is below tau (in [0, 1]).")
METHOD = typer.Option(AgentConfig.method, help=f"One of: {', '.join(METHODS)}.")
K = typer.Option(SynthesisConfig.k, "--k", help="Synthetic examples per uncertain input.")
VERIFY = typer.Option(",".join(SynthesisConfig().verify), "--verify",
                      help="Checks every synthetic pair must pass, comma-separated: schema, answer-check (math "
                           "solutions), consistency (the model reproduces the answer); none keeps every pair that "
                           "parses.")


def verifiers(text: str) -> list[str]:
    """--verify's comma-separated names as `SynthesisConfig.verify`; "none" (or nothing) verifies nothing."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return [] if names == ["none"] else names
TEACHER_URL = typer.Option(TeacherConfig.url, help="TT-D teacher: OpenAI-compatible base URL (.../v1).")
TEACHER_MODEL = typer.Option(TeacherConfig.model, help="TT-D teacher: model name at that URL.")
TEACHER_KEY_ENV = typer.Option(TeacherConfig.api_key_env, help="Environment variable holding the teacher's key.")
ICL_SOURCE = typer.Option(AgentConfig.icl_source, help="tt-icl demonstrations from 'self' or the 'teacher'.")
EPOCHS = typer.Option(LearnConfig.epochs, help="LoRA epochs over the synthetic pairs.")
LR = typer.Option(LearnConfig.lr, help="LoRA learning rate.")
MAX_NEW_TOKENS = typer.Option(AgentConfig.max_new_tokens, help="Answer length budget.")

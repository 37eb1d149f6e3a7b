"""Human-readable rendering of a response's trace (the CLI without --json)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from ttsi.task import Answer, answer_json
from ttsi.trace import Response


def _text(answer: Answer) -> str:
    """An answer on one line: the calls as JSON, a free-form answer quoted."""
    return json.dumps(answer_json(answer), ensure_ascii=False)


def print_response(r: Response, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{r.id}[/bold]  method [cyan]{r.method}[/cyan]  decision [bold]{r.decision}[/bold]"
                  f"  adapted [bold]{r.adapted}[/bold]\n  {r.reason}")
    u = r.uncertainty
    if u is not None:
        table = Table(title=f"gate: {u.measure} = {u.confidence:.4f}, tau = {u.tau}, margin = {u.margin:.4f}")
        for column in ("candidate", "log-prob", "tokens", "p"):
            table.add_column(column, justify="left" if column == "candidate" else "right")
        for name, lp, n, p in sorted(zip(u.candidates, u.logprobs, u.n_tokens, u.probs, strict=True),
                                     key=lambda row: -row[3]):
            table.add_row(name, f"{lp:.3f}", str(n), f"{p:.4f}")
        console.print(table)
    for pair in r.synthetic:
        console.print(f"  synthetic ({pair.source}): {pair.query!r} -> {_text(pair.answer)}")
    if r.rejected:
        console.print(f"  rejected drafts: {r.rejected}")
    if r.train is not None:
        console.print(f"  trained {r.train.steps} steps, loss {' -> '.join(f'{x:.3f}' for x in r.train.losses)}")
    answer = "unparsable: " + (r.parse_error or "") if r.answer is None else _text(r.answer)
    console.print(f"[bold]answer[/bold] {answer}")
    console.print("  " + "  ".join(f"{k} {v:.3f}" for k, v in r.timings.items()))

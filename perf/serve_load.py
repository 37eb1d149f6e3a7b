"""Load test of `ttsi serve` on loopback: N concurrent clients, batching on vs off, side by side.

    python perf/serve_load.py [--model DIR] [--requests 64] [--concurrency 16] [--max-batch 1,16]
                                    [--method tt-si] [--tau 0.95] [--max-queue N] [--no-alone] [--json]

For each `--max-batch` setting (default: 1, then 16) the script serves the model in this process (uvicorn in a
thread, one worker), sends one untimed warm-up request, then `--requests` chat completions from `--concurrency`
AsyncOpenAI clients. Once (on the first setting's server) it also sends the same requests one at a time. It prints
a header (the command, the date, the machine and its load average), then per setting: throughput (requests/s) and
its ratio to the first setting's, latency p50/p95/p99, errors (429s also counted apart, and the first message of
each kind), the adapted share, and how many concurrent answers differ from their one-at-a-time answer (should be
0). Progress goes to stderr. Tasks: the SealShift out-of-domain test split for the embedded model (default), or the
toy tasks with `--toy` (for a toy model). Raw outputs of recorded runs: `perf/results/serve_load_*.txt`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(REPO))

from perf.common import machine_line  # noqa: E402

NAME = "served"


def tasks_for(toy: bool, n: int) -> list[Any]:
    if toy:
        from ttsi.toy import UNSEEN, make_tasks

        return make_tasks(n, UNSEEN, seed=0)
    from ttsi.benchmarks import get_benchmark

    tasks = get_benchmark("sealshift").load(None, "ood")
    return [tasks[i % len(tasks)] for i in range(n)]


def request_args(task: Any) -> dict[str, Any]:
    d = task.to_dict()
    tools = [{"type": "function", "function": t["function"]} for t in d["tools"]]
    return {"model": NAME, "messages": d["messages"], "tools": tools, "seed": 0}


def answer(completion: Any) -> str:
    message = completion.choices[0].message
    calls = [(tc.function.name, tc.function.arguments) for tc in message.tool_calls or []]
    return json.dumps([message.content, calls])


async def load(url: str, args: list[dict[str, Any]], concurrency: int) -> tuple[list[Any], list[float], float]:
    """(completion or exception per request, latencies, wall seconds) with `concurrency` requests in flight."""
    import openai

    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600) as client:

        async def one(a: dict[str, Any]) -> tuple[Any, float]:
            async with gate:
                start = time.perf_counter()
                try:
                    result: Any = await client.chat.completions.create(**a)
                except Exception as e:
                    result = e
                return result, time.perf_counter() - start

        start = time.perf_counter()
        done = await asyncio.gather(*(one(a) for a in args))
        wall = time.perf_counter() - start
    return [r for r, _ in done], [s for _, s in done], wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def status_of(error: Exception) -> str:
    """An error's HTTP status ("429", "504", ...), or its type name when no response came back."""
    code = getattr(error, "status_code", None)
    return str(code) if code is not None else type(error).__name__


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model directory or id (default: the embedded model)")
    p.add_argument("--toy", action="store_true", help="toy tasks (for tests/fixtures/toy-model)")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-batch", default="1,16", help="comma-separated --max-batch settings to compare")
    p.add_argument("--max-queue", type=int, default=None, help="server queue bound (default: max(256, --requests))")
    p.add_argument("--method", default="tt-si")
    p.add_argument("--tau", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--no-alone", action="store_true", help="skip the one-at-a-time pass (no differ count)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = p.parse_args(argv)

    import openai

    from ttsi.config import AgentConfig, GateConfig
    from ttsi.model import HFModel
    from ttsi.sealshift.recipe import MODELS
    from ttsi.serve.background import BackgroundServer
    from ttsi.serve.settings import ServeSettings

    print(f"# python perf/serve_load.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {machine_line()}")
    model = HFModel.from_pretrained(a.model or str(MODELS["base"]), dtype="auto", device=a.device)
    args = [request_args(t) for t in tasks_for(a.toy, a.requests)]
    max_queue = a.max_queue or max(256, a.requests)
    print(f"# {len(args)} requests, {a.concurrency} concurrent clients, method {a.method}, tau {a.tau}, "
          f"max_new_tokens {a.max_new_tokens}, max_queue {max_queue}, batch_wait_ms 10; one warm-up request per "
          f"setting (not timed); "
          + ("no one-at-a-time pass" if a.no_alone else
             "one-at-a-time answers computed once, sequentially, on the first setting's server"), flush=True)
    rows: list[dict[str, Any]] = []
    alone: list[Any] | None = None
    for max_batch in [int(b) for b in a.max_batch.split(",")]:
        settings = ServeSettings(model_name=NAME, agent=AgentConfig(method=a.method, gate=GateConfig(tau=a.tau),
                                                                    max_new_tokens=a.max_new_tokens),
                                 max_batch=max_batch, max_queue=max_queue, timeout_s=3600)
        with BackgroundServer(model, settings) as served, \
                openai.OpenAI(base_url=served.url, api_key="none", max_retries=0, timeout=600) as client:
            client.chat.completions.create(**args[0])  # warm-up
            note(f"max_batch {max_batch}: {len(args)} requests, {a.concurrency} concurrent")
            results, latencies, wall = asyncio.run(load(served.url, args, a.concurrency))
            errors = sum(isinstance(r, Exception) for r in results)
            note(f"max_batch {max_batch}: done in {wall:.1f} s, {(len(results) - errors) / wall:.3f} requests/s, "
                 f"{errors} errors")
            if alone is None and not a.no_alone:
                start = time.perf_counter()
                alone = [client.chat.completions.create(**x) for x in args]
                note(f"one at a time: {len(args)} requests in {time.perf_counter() - start:.1f} s")
        ok = [r for r in results if not isinstance(r, Exception)]
        failed: dict[str, int] = {}
        for r in results:
            if isinstance(r, Exception):
                failed[status_of(r)] = failed.get(status_of(r), 0) + 1
        shown: set[str] = set()
        for r in results:  # the first message of each kind, for the record
            if isinstance(r, Exception) and status_of(r) not in shown:
                shown.add(status_of(r))
                print(f"# max_batch {max_batch}: error {status_of(r)} x{failed[status_of(r)]}: {str(r)[:300]}")
        differ: int | str = "-"
        if alone is not None:
            differ = sum(answer(r) != answer(s) for r, s in zip(results, alone, strict=True)
                         if not isinstance(r, Exception))
        adapted = sum(bool((r.model_extra or {}).get("ttsi", {}).get("adapted")) for r in ok)
        stages: dict[str, float] = {}
        for r in ok:  # each stage's seconds, a batch's shared stage charged evenly to its inputs: sums = worker time
            for stage, seconds in ((r.model_extra or {}).get("ttsi", {}).get("timings") or {}).items():
                stages[stage] = stages.get(stage, 0.0) + seconds
        batches = [(r.model_extra or {}).get("ttsi", {}).get("batch") or 1 for r in ok]
        print(f"# max_batch {max_batch}: worker seconds by stage, summed over requests (wall {wall:.1f} s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
              + f"; mean batch size seen by a request {sum(batches) / max(1, len(batches)):.1f}")
        throughput = len(ok) / wall
        first = rows[0]["throughput_rps"] if rows else throughput
        rows.append({"max_batch": max_batch, "requests": len(args), "concurrency": a.concurrency,
                     "wall_s": round(wall, 1), "throughput_rps": round(throughput, 3),
                     "speedup": round(throughput / first, 2) if first else 1.0,
                     "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
                     "p99_s": round(percentile(latencies, 99), 3), "errors": len(results) - len(ok),
                     "errors_429": failed.get("429", 0), "adapted_share": round(adapted / max(1, len(ok)), 3),
                     "differ_from_alone": differ})
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        keys = list(rows[0])
        print("  ".join(f"{k:>17}" for k in keys))
        for row in rows:
            print("  ".join(f"{row[k]!s:>17}" for k in keys))
    if alone is not None:
        share = sum(bool((r.model_extra or {}).get("ttsi", {}).get("adapted")) for r in alone) / len(alone)
        print(f"# one at a time: adapted share {share:.3f}")
    print(f"# speedup = throughput / throughput of max_batch {rows[0]['max_batch']}; {machine_line()}")
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    run()

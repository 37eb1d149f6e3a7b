"""`ttsi reproduce --ray`: a local Ray cluster gives the records of a local run, record for record, and an actor
killed mid-run loses nothing and duplicates nothing. Skipped, with the reason, where the ray extra is not installed
(`pip install 'ttsi[ray]'`; `make install` installs it)."""

from __future__ import annotations

import json
import os
import signal

import pytest
from rich.console import Console

ray = pytest.importorskip("ray", reason="the Ray path needs the ray extra: pip install 'ttsi[ray]'")

from ttsi.reproduce.plan import parse_plan, tomllib  # noqa: E402
from ttsi.sealshift.recipe import MODELS  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PLAN = """
name = "ray-test"
[defaults]
benchmark = "sealshift:ood"
sample = 6
seeds = [0, 1]
batch = 2
lr = 1e-3
[[cell]]
method = ["base", "tt-si", "oracle"]
[[cell]]
method = "tt-d"
teacher = "{teacher}"
[[cell]]
method = "sft"
seeds = [0]
sft = {{ split = "ood_train", limit = 8, epochs = 1, batch_size = 4, lr = 1e-3 }}
"""


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _plan():
    return parse_plan(tomllib.loads(PLAN.format(teacher=MODELS["teacher"])), "ray-test")


def _records(path):
    """The records without their timings (wall seconds differ from run to run)."""
    return [{k: v for k, v in json.loads(line).items() if k != "timings"}
            for line in (path / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    import torch

    from ttsi.reproduce.run import run_plan

    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each actor runs
    try:
        run_plan(_plan(), out, model=str(MODELS["base"]), console=Console(quiet=True))
    finally:
        torch.set_num_threads(threads)
    return out


def test_a_local_cluster_gives_the_local_records(cluster, local_run, tmp_path):
    from ttsi.reproduce.run import run_plan

    summaries = run_plan(_plan(), tmp_path, model=str(MODELS["base"]), ray="local", console=Console(quiet=True))
    assert len(summaries) == 5
    for cell in _plan().cells:
        ours, theirs = _records(tmp_path / cell.name), _records(local_run / cell.name)
        assert len(ours) == 6 * len(cell.seeds)
        assert ours == theirs, cell.name  # record for record, in the same order
        local = json.loads((local_run / cell.name / "summary.json").read_text())
        mine = json.loads((tmp_path / cell.name / "summary.json").read_text())
        for key in ("accuracy", "adapted", "gate", "vs_base", "adapted_effect", "by_tau"):
            assert mine.get(key) == local.get(key), (cell.name, key)
        assert summaries[cell.name]["accuracy"] == local["accuracy"]
    assert _table(tmp_path) == _table(local_run)
    # interrupted (a cell's last records gone, the next torn), then resumed on Ray: the same records again
    results = tmp_path / "sealshift-ood-tt-si" / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:4]) + lines[4][:30])
    run_plan(_plan(), tmp_path, model=str(MODELS["base"]), ray="local", resume=True, console=Console(quiet=True))
    assert _records(tmp_path / "sealshift-ood-tt-si") == _records(local_run / "sealshift-ood-tt-si")


def _table(out):
    """table.md without its one timing column (+s, seconds per adapted input)."""
    lines, drop = [], None
    for line in (out / "table.md").read_text().splitlines():
        cells = line.split(" | ")
        if "+s" in cells:
            drop = cells.index("+s")
        lines.append(" | ".join(c for i, c in enumerate(cells) if i != drop) if line.startswith("|") else line)
    return lines


def test_a_killed_actor_loses_nothing_and_duplicates_nothing(cluster, local_run, tmp_path):
    from ttsi.reproduce.jobs import make_jobs
    from ttsi.reproduce.ray_backend import run_ray

    killed: list[int] = []

    def kill_one(pool):  # after the first unit's records arrive: SIGKILL an actor that is answering a unit
        if not killed and pool.in_flight():
            pid = pool.pids[pool.in_flight()[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    sft_jobs, jobs = make_jobs(_plan(), tmp_path, str(MODELS["base"]))
    cells = ("sealshift-ood-tt-si", "sealshift-ood-sft")  # adapting, and reading an adapter sent to the actor
    jobs = [job for job in jobs if job.cell.name in cells]
    pools = []
    run_ray(sft_jobs, jobs, False, "local", Console(quiet=True),
            on_unit=lambda pool: (pools.append(pool), kill_one(pool)))
    assert killed and pools[-1].requeued >= 1  # a unit was in flight on the killed actor and went again
    for cell in (c for c in _plan().cells if c.name in cells):
        ours = _records(tmp_path / cell.name)
        assert len({(r["id"], r["seed"]) for r in ours}) == len(ours) == 6 * len(cell.seeds), cell.name
        assert ours == _records(local_run / cell.name), cell.name


def test_without_ray_the_option_says_how_to_install_it(monkeypatch, tmp_path):
    import builtins

    from typer.testing import CliRunner

    from ttsi.cli import app

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = CliRunner().invoke(app, ["reproduce", "--plan", "quick", "--ray", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --ray needs the ray extra: pip install 'ttsi[ray]'"

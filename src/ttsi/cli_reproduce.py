"""`ttsi reproduce`: run a plan of cells (built-in `paper`, `quick`, or a TOML file), locally or on Ray."""

from __future__ import annotations

from pathlib import Path

import typer

from ttsi.cli_common import DEVICE, DTYPE, TEACHER_KEY_ENV, TEACHER_MODEL, TEACHER_URL, cli_errors, quiet_libraries
from ttsi.errors import ConfigError

PLANS = ("paper", "quick")


def reproduce_command(
    model: str | None = typer.Option(None, "--model", help="Hugging Face id or local directory (default for the "
                                                           "quick plan: the embedded SealShift model)."),
    plan: str = typer.Option("quick", "--plan", help="paper (Table 1 and the SealTool ablations), quick (the "
                                                     "embedded model, minutes), or a plan file (TOML)."),
    out: Path | None = typer.Option(None, help="Where every cell's run directory, the tables and the report go "
                                               "(default runs/reproduce-PLAN)."),
    ray: bool = typer.Option(False, "--ray", help="Run the cells' items on Ray actors (one model each, num_gpus=1 "
                                                  "where there are GPUs); needs the ray extra."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="With --ray: the cluster to join (auto: the "
                                                                        "running one; ray://HOST:10001); default "
                                                                        "$RAY_ADDRESS, else a new local cluster."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted plan in --out."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and the cost estimate (forward tokens); "
                                                          "run nothing."),
    workers: int = typer.Option(1, min=1, help="Local worker processes (one CPU thread each); 1 runs in this "
                                               "process (a GPU)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Benchmark data directory (default: "
                                                                 "$TTSI_DATA_DIR)."),
    teacher_url: str | None = TEACHER_URL,
    teacher_model: str | None = TEACHER_MODEL,
    teacher_key_env: str = TEACHER_KEY_ENV,
    dtype: str = DTYPE,
    device: str | None = DEVICE,
) -> None:
    """Run a plan: benchmark:split x method x settings x seeds, one report with the paper's numbers beside ours."""
    from rich.console import Console

    from ttsi.config import TeacherConfig
    from ttsi.reproduce.builtin import paper_plan, quick_plan
    from ttsi.reproduce.plan import load_plan

    if (teacher_url is None) != (teacher_model is None):
        raise ConfigError("give both --teacher-url and --teacher-model (the tt-d teacher), or neither")
    teacher = TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_key_env) \
        if teacher_url else None
    if plan == "paper":
        the_plan = paper_plan(teacher, placeholder_teacher=dry_run)
    elif plan == "quick":
        the_plan = quick_plan()
    elif Path(plan).suffix == ".toml" or Path(plan).exists():
        the_plan = load_plan(Path(plan))
    else:
        raise ConfigError(f"unknown plan {plan!r}: give paper, quick or a plan file (TOML)")
    console = Console(width=max(Console().width, 150))  # the tables are wide
    if dry_run:
        from ttsi.reproduce.run import dry_run as list_cells

        list_cells(the_plan, console, data_dir)
        return
    if model is None and plan == "quick":
        from ttsi.sealshift.recipe import MODELS

        model = str(MODELS["base"])
    if model is None and any(c.model is None for c in the_plan.cells):
        raise ConfigError(f"plan {the_plan.name} needs a model: give --model PATH_OR_ID")
    if ray_address is not None and not ray:
        raise ConfigError("--ray-address is for --ray")
    if ray:
        from ttsi.reproduce.ray_backend import require_ray

        require_ray()
    quiet_libraries()
    from ttsi.reproduce.run import run_plan

    run_plan(the_plan, out or Path("runs") / f"reproduce-{the_plan.name}", model=model, resume=resume,
             workers=workers, ray=(ray_address or "local") if ray else None, console=console, data_dir=data_dir,
             dtype=dtype, device=device)


def register(app: typer.Typer) -> None:
    app.command("reproduce")(cli_errors(reproduce_command))


__all__ = ["register"]

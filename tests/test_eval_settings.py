"""`ttsi eval`'s typed settings write run.json exactly as the free-form dict did, so older run directories resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from ttsi.cli import app
from ttsi.config import AgentConfig, GateConfig
from ttsi.errors import ConfigError
from ttsi.evaluation.records import RunDir
from ttsi.evaluation.settings import EvalSettings

AGENT = AgentConfig(method="tt-si", gate=GateConfig(tau=0.95), record_base=True)


def _old_run_json() -> dict:
    """run.json as `ttsi eval` wrote it before the settings were typed (a dict literal in cli_eval)."""
    return {"model": "m", "adapter": None, "benchmark": "toy", "split": "unseen", "limit": 4, "n": 4,
            "seeds": [0, 1], "taus": [0.5, 0.95], "agent": AGENT.to_dict(), "batch": 1,
            "data_dir": None, "dtype": "auto", "device": None}


SETTINGS = EvalSettings(model="m", adapter=None, benchmark="toy", split="unseen", limit=4, n=4, seeds=(0, 1),
                        taus=(0.5, 0.95), agent=AGENT, batch=1, data_dir=None, dtype="auto", device=None)


def test_the_typed_settings_write_the_same_run_json():
    assert json.dumps(SETTINGS.to_dict()) == json.dumps(_old_run_json())  # same keys, in the same order


def test_a_run_directory_of_the_free_form_settings_resumes(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(_old_run_json(), indent=2, sort_keys=True))
    plan = [("unseen-0", 0)]
    with RunDir(tmp_path, SETTINGS.to_dict(), resume=True, plan=plan, method="tt-si") as run:
        assert run.done == set()
    with pytest.raises(ConfigError, match="settings differ from the original run in batch"):
        RunDir(tmp_path, dataclasses.replace(SETTINGS, batch=2).to_dict(), resume=True, plan=plan, method="tt-si")


@pytest.mark.slow
def test_ttsi_eval_resumes_a_run_started_before_the_settings_were_typed(toy_dir, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    old = {"model": str(toy_dir), "adapter": None, "benchmark": "toy", "split": "unseen", "limit": 2, "n": 2,
           "seeds": [0], "taus": [0.95], "batch": 1, "data_dir": None, "dtype": "auto", "device": None,
           "agent": AgentConfig(method="base", max_new_tokens=8, record_base=True).to_dict()}
    (out / "run.json").write_text(json.dumps(old, indent=2, sort_keys=True))
    result = CliRunner().invoke(app, ["eval", "--model", str(toy_dir), "--benchmark", "toy:unseen", "--limit", "2",
                                      "--method", "base", "--max-new-tokens", "8", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text()) == old

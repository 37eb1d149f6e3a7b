"""`ttsi serve` with the token gate: the profile is checked when the server is built, and requests are gated by
their answers' per-token certainty (the trace says so)."""

from __future__ import annotations

import openai
import pytest

from ttsi.calibrate import calibrate_profile
from ttsi.config import AgentConfig, GateConfig, LearnConfig
from ttsi.errors import ConfigError
from ttsi.model import HFModel
from ttsi.serve.app import create_app
from ttsi.serve.background import BackgroundServer
from ttsi.serve.settings import ServeSettings
from ttsi.toy import SEEN, UNSEEN, make_tasks

NAME = "toy"


def _settings(reference: str) -> ServeSettings:
    gate = GateConfig(measure="token", reference=reference, token_count=None, token_share=0.05)
    return ServeSettings(model_name=NAME, format="json", batch_wait_ms=20.0,
                         agent=AgentConfig(method="tt-si", gate=gate, learn=LearnConfig(epochs=2), max_new_tokens=64))


@pytest.fixture(scope="module")
def model(toy_dir):
    return HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    result = calibrate_profile(model, make_tasks(12, SEEN, seed=11), None, max_new_tokens=64)
    return str(result["profile"].save(tmp_path_factory.mktemp("profile") / "p.json"))


def test_requests_are_gated_by_tokens(model, reference):
    tasks = make_tasks(6, UNSEEN, seed=4)
    with BackgroundServer(model, _settings(reference)) as server, \
            openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as client:
        traces = []
        for task in tasks:
            d = task.to_dict()
            completion = client.chat.completions.create(model=NAME, messages=d["messages"], tools=d["tools"], seed=0)
            traces.append(completion.model_extra["ttsi"])
    for trace in traces:
        u = trace["uncertainty"]
        assert u["measure"] == "token" and u["uncertain"] == (u["tokens"]["share"] >= 0.05)
        assert trace["decision"] == ("adapt" if u["uncertain"] else "skip")


def test_a_missing_profile_stops_the_server_before_it_serves(model, tmp_path):
    with pytest.raises(ConfigError, match="ttsi calibrate --profile"):
        create_app(model, _settings(str(tmp_path / "nowhere.json")))

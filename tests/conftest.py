"""Shared fixtures: tiny models built from a config with a tokenizer trained here, never downloaded."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from hypothesis import HealthCheck, settings

from ttsi.formats import get_format
from ttsi.model import HFModel
from ttsi.prompts import answer_messages, synthesis_messages
from ttsi.task import Call, Task, Tool
from ttsi.tiny_models import build_tiny_model, train_tokenizer
from ttsi.toy import SEEN, make_tasks

torch.set_num_threads(min(2, torch.get_num_threads()))

# Property-based tests: `ci` (what `make test` runs) is derandomized, so a run is reproducible and needs no example
# database; `deep` (`make fuzz`) draws many more, fresh examples each run.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("deep", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# Built by scripts/build_test_fixtures.py and shipped: training it here took minutes, and its weights followed the
# machine's thread count. test_fixtures.py checks the script still rebuilds it.
TOY_DIR = Path(__file__).resolve().parent / "fixtures" / "toy-model"


def pytest_collection_modifyitems(config, items):
    """Every test that reads the shared data is marked `data`, so that no test can forget the marker."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


def load_script(name: str):
    """`scripts/NAME.py` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weather_task(**overrides) -> Task:
    props = {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}
    tools = [
        Tool("get_weather", "Current weather", {"type": "object", "properties": props, "required": ["city"]}),
        Tool("send_email", "Send an email", {"type": "object", "properties": {"to": {"type": "string"}},
                                             "required": ["to"]}),
        Tool("set_alarm", "Set an alarm", {"type": "object", "properties": {"hour": {"type": "integer"}},
                                           "required": ["hour"]}),
    ]
    fields = {"id": "w-1", "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
              "tools": tools, "answer": [Call("get_weather", {"city": "Paris"})]}
    fields.update(overrides)
    return Task(**fields)


@pytest.fixture(scope="session")
def tokenizer():
    fmt = get_format("json")
    tasks = [weather_task(), *make_tasks(40, SEEN, seed=0)]
    corpus = [m["content"] for t in tasks for m in answer_messages(t, fmt) + synthesis_messages(t, fmt)]
    return train_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory, tokenizer):
    return build_tiny_model(tmp_path_factory.mktemp("qwen"), tokenizer, arch="qwen2", seed=0, hidden=32)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer):
    return build_tiny_model(tmp_path_factory.mktemp("llama"), tokenizer, arch="llama", seed=0, hidden=32)


@pytest.fixture
def qwen(qwen_dir) -> HFModel:
    """A fresh load per test: LoRA wrapping mutates the module tree."""
    return HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def toy_dir():
    """A tiny model trained briefly on the toy tools: it writes well-formed calls and synthesis replies (read-only)."""
    return TOY_DIR


@pytest.fixture
def toy(toy_dir) -> HFModel:
    return HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")


def missing_data(reason: str) -> None:
    """Skip a test whose benchmark data is absent, or fail it under TTSI_REQUIRE_DATA=1 (CI has the data, so a
    skip there would hide a broken path or checkout)."""
    if os.environ.get("TTSI_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason}, and TTSI_REQUIRE_DATA=1 requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir():
    """The shared benchmark data (../shared/data beside the clone, or $TTSI_DATA_DIR); `missing_data` when absent."""
    path = Path(os.environ.get("TTSI_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not path.is_dir():
        missing_data(f"benchmark data not found at {path} (set TTSI_DATA_DIR)")
    return path

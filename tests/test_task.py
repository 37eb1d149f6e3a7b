"""The task format and the settings: valid inputs load, every malformed one names its problem."""

from __future__ import annotations

import json

import pytest

from ttsi.config import AgentConfig, GateConfig, LearnConfig, SynthesisConfig
from ttsi.errors import ConfigError, TaskError
from ttsi.task import Call, Task, load_task, load_tasks

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


def _write(tmp_path, obj, name="task.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_task_loads_openai_and_bare_tool_shapes(tmp_path):
    bare = TOOL["function"] | {"name": "get_time"}
    task = load_task(_write(tmp_path, {"id": 7, "query": "Weather in Oslo?", "tools": [TOOL, bare],
                                       "answer": [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]}))
    assert task.id == "7" and task.query == "Weather in Oslo?"
    assert [t.name for t in task.tools] == ["get_weather", "get_time"]
    assert task.tools[0].required == ["city"]
    assert task.answer == [Call("get_weather", {"city": "Oslo"})]
    assert Task.from_dict(task.to_dict()).to_dict() == task.to_dict()


def test_messages_and_the_last_user_turn(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "Weather in Oslo?"}]
    task = load_task(_write(tmp_path, {"id": "m", "messages": messages, "tools": [TOOL]}))
    assert task.query == "Weather in Oslo?" and task.answer is None


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not valid JSON: Expecting property name"),
    ([], "a task must be a JSON object"),
    ({"query": "q", "tools": []}, "missing 'id'"),
    ({"id": "a", "tools": []}, "needs 'messages' or a non-empty 'query'"),
    ({"id": "a", "messages": [{"role": "robot", "content": "x"}]}, r"messages\[0\] needs a 'role'"),
    ({"id": "a", "query": "q", "tools": [{"function": {"parameters": {}}}]}, r"tools\[0\] is missing 'name'"),
    ({"id": "a", "query": "q", "tools": [{"name": "f"}]}, "tool 'f' is missing 'parameters'"),
    ({"id": "a", "query": "q", "tools": [TOOL, TOOL]}, "duplicate tool names"),
    ({"id": "a", "query": "q", "tools": [TOOL], "answer": [{"arguments": {}}]}, "needs a 'name' string"),
])
def test_malformed_tasks_name_the_problem(tmp_path, content, message):
    with pytest.raises(TaskError, match=message):
        load_task(_write(tmp_path, content))


def test_missing_task_file(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        load_task(tmp_path / "nope.json")


def test_load_tasks_from_jsonl_and_list(tmp_path):
    items = [{"id": i, "query": f"q{i}", "tools": [TOOL]} for i in range(3)]
    jsonl = _write(tmp_path, "\n".join(json.dumps(x) for x in items) + "\n", "tasks.jsonl")
    assert [t.id for t in load_tasks(jsonl)] == ["0", "1", "2"]
    assert [t.id for t in load_tasks(_write(tmp_path, items, "tasks.json"))] == ["0", "1", "2"]
    bad = _write(tmp_path, json.dumps(items[0]) + "\n{oops\n", "bad.jsonl")
    with pytest.raises(TaskError, match=r"bad\.jsonl:2 is not valid JSON"):
        load_tasks(bad)


@pytest.mark.parametrize(("config", "message"), [
    (AgentConfig(method="magic"), "unknown method 'magic'"),
    (AgentConfig(gate=GateConfig(tau=1.5)), r"tau must be in \[0, 1\], got 1.5"),
    (AgentConfig(gate=GateConfig(tau=-0.1)), r"tau must be in \[0, 1\]"),
    (AgentConfig(synthesis=SynthesisConfig(k=0)), "K .* must be at least 1, got 0"),
    (AgentConfig(gate=GateConfig(measure="vibes")), "unknown gate measure"),
    (AgentConfig(learn=LearnConfig(lr=0)), "learning rate must be positive"),
    (AgentConfig(samples=0), "samples must be at least 1"),
    (AgentConfig(samples=5, sample_temperature=0.0), "need a temperature above 0"),
    (AgentConfig(method="tt-d"), "needs a teacher"),
    (AgentConfig(method="tt-icl", icl_source="teacher"), "needs a teacher"),
    (AgentConfig(learn=LearnConfig(lr=float("inf"))), "learning rate must be a finite number, got inf"),
    (AgentConfig(learn=LearnConfig(alpha=float("inf"))), "LoRA alpha must be a finite number"),
    (AgentConfig(gate=GateConfig(tau=float("nan"))), "tau must be a finite number, got nan"),
    (AgentConfig(learn=LearnConfig(max_grad_norm=float("nan"))), "max_grad_norm must be a finite number"),
    (AgentConfig(learn=LearnConfig(max_grad_norm=0.0)), "max_grad_norm must be positive"),
    (AgentConfig(synthesis=SynthesisConfig(top_p=float("nan"))), "synthesis top_p must be a finite number"),
    (AgentConfig(seed=2**64), r"seed must be an integer in \[0, 2\^63 - 1\]"),
    (AgentConfig(seed=-1), "seed must be an integer"),
    (AgentConfig(synthesis=SynthesisConfig(max_new_tokens=0)), "synthesis max_new_tokens must be at least 1"),
    (AgentConfig(max_new_tokens=0), "max_new_tokens must be at least 1"),
])
def test_bad_settings_are_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_config_round_trips_through_a_dict():
    config = AgentConfig(method="tt-icl", gate=GateConfig(tau=0.5), synthesis=SynthesisConfig(k=3))
    assert AgentConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["learn"] == {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear",
                                         "epochs": 5, "lr": 1e-4, "warmup_ratio": 0.03, "batch_size": 1,
                                         "weight_decay": 0.0, "max_grad_norm": 1.0}
    with pytest.raises(ConfigError, match="unknown gate settings: speed"):
        AgentConfig.from_dict({"gate": {"speed": 1}})


def test_a_tools_own_description_survives_a_round_trip():
    raw = {"api_name": "getWeather", "parameters": {"city": {"type": "str"}}, "required": ["city"]}
    d = {"id": "r", "query": "q", "tools": [TOOL | {"raw": raw}], "format": "json"}
    task = Task.from_dict(d)
    assert task.tools[0].raw == raw
    assert Task.from_dict(task.to_dict()).tools[0].raw == raw

"""Context length: an input the model cannot read whole is refused with a typed error, generation stops at the
window, pairs too long to train on are rejected; and the library refuses token budgets and percentiles that
cannot work."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import ttsi.engine.decode as engine
from ttsi.agent import STAGES, Decision, Response, SelfImprovingAgent
from ttsi.augment import OneByOne, Synthesis, SyntheticPair
from ttsi.awareness import margin, name_prefixes, relative_softmax
from ttsi.benchmarks import get_benchmark
from ttsi.calibrate import calibrate_tau, gate_confidences
from ttsi.cli import app
from ttsi.config import AgentConfig, GateConfig, LearnConfig, SynthesisConfig
from ttsi.errors import ConfigError, ContextLengthError, TaskError
from ttsi.evaluation.runner import make_record
from ttsi.formats import get_format
from ttsi.model import context_window
from ttsi.prompts import answer_messages, synthesis_messages
from ttsi.task import Call

from .conftest import weather_task

FMT = get_format("json")
LONG_QUERY = "What is the weather in Paris? " * 20
PAIR = SyntheticPair("Weather in Oslo?", [Call("get_weather", {"city": "Oslo"})], "teacher")
LONG_PAIR = SyntheticPair("Weather in Oslo? " * 60, [Call("get_weather", {"city": "Oslo"})], "teacher")


class FixedSynthesizer(OneByOne):
    source = "teacher"

    def __init__(self, pairs):
        self.pairs = pairs

    def synthesize(self, task, fmt, seed):
        return Synthesis(list(self.pairs), drafts=len(self.pairs))


def long_task(**overrides):
    return weather_task(id="long", messages=[{"role": "user", "content": LONG_QUERY}], **overrides)


def size(model, text: str) -> int:
    return model.count_tokens([text])[0]


def prompt_size(model, task) -> int:
    return size(model, model.chat_prompt(answer_messages(task, FMT)))


def gate_size(model, task) -> int:
    """Tokens the gate reads for the task: its prompt and its longest candidate."""
    return prompt_size(model, task) + max(model.count_tokens(name_prefixes(task.tools, FMT)))


def agent(model, method="oracle", tau=1.0, synth=None, max_new_tokens=8):
    config = AgentConfig(method=method, gate=GateConfig(tau=tau), learn=LearnConfig(epochs=1),
                         max_new_tokens=max_new_tokens)
    if method == "tt-d":
        config.teacher.url, config.teacher.model = "http://unused/v1", "fixed"
    return SelfImprovingAgent(model, config, teacher=synth)


# ---- the model: its window, token counts, budgets ---------------------------------------------------------------

def test_the_window_is_the_configs_position_limit_else_a_sane_tokenizer_limit(qwen):
    def window(tokenizer_limit=None, **config):
        return context_window(SimpleNamespace(config=SimpleNamespace(**config)),
                              SimpleNamespace(model_max_length=tokenizer_limit))

    assert window(131072, max_position_embeddings=32768) == 32768  # Qwen2 / Llama: the config wins
    assert window(None, n_positions=1024) == 1024  # GPT-2's name for it
    assert window(4096) == 4096
    assert window(int(1e30)) is None and window(None, max_position_embeddings=None) is None  # unknown
    assert qwen.context_window == qwen.model.config.max_position_embeddings == 2048


def test_count_tokens_counts_what_encode_makes(qwen):
    texts = ["hello", qwen.chat_prompt([{"role": "user", "content": LONG_QUERY}]), ""]
    assert qwen.count_tokens(texts) == [len(qwen.encode(t)) for t in texts] and qwen.count_tokens([]) == []


def test_generate_cuts_each_prompts_budget_to_what_the_window_leaves(qwen, monkeypatch):
    limits, rows = [], []

    def spy(*args, **kwargs):
        limits.append(kwargs["max_new_tokens"])
        rows.append(decode(*args, **kwargs))
        return rows[-1]

    decode = engine.decode
    monkeypatch.setattr(engine, "decode", spy)
    prompts = [qwen.chat_prompt([{"role": "user", "content": q}]) for q in ("hi", LONG_QUERY)]
    long = qwen.count_tokens(prompts)[1]
    qwen.generate(prompts, max_new_tokens=20)
    qwen.context_window = long + 3
    qwen.generate(prompts, max_new_tokens=20)
    assert limits == [[20, 20], [20, 3]] and all(len(row) <= 3 for row in rows[1][1:])
    qwen.context_window = long  # no room for a single token after the long prompt
    with pytest.raises(ContextLengthError, match=f"prompt 1 is {long:,} tokens; the model reads at most {long:,}"):
        qwen.generate(prompts, max_new_tokens=20)


def test_hugging_face_generation_takes_the_smallest_budget_of_the_batch(qwen, monkeypatch):
    monkeypatch.setattr(engine, "supports", lambda model: False)  # e.g. a model with sliding-window layers
    budgets = []
    reference = qwen.hf_generate_ids
    qwen.hf_generate_ids = lambda ids, limit, *a: budgets.append(limit) or reference(ids, limit, *a)
    prompts = [qwen.chat_prompt([{"role": "user", "content": q}]) for q in ("hi", LONG_QUERY)]
    qwen.context_window = qwen.count_tokens(prompts)[1] + 2
    assert len(qwen.generate(prompts, max_new_tokens=20)) == 2 and budgets == [2]


@pytest.mark.parametrize("budget", [0, -1, 1.5, True, "8", None])
def test_generate_refuses_a_budget_that_is_not_a_positive_int(qwen, budget):
    with pytest.raises(ConfigError, match="max_new_tokens must be an integer of at least 1"):
        qwen.generate(["hi"], max_new_tokens=budget)


@pytest.mark.parametrize("field", ["max_new_tokens", "synthesis", "call"])
def test_the_config_refuses_a_zero_token_budget(field):
    config = {"max_new_tokens": AgentConfig(max_new_tokens=0),
              "synthesis": AgentConfig(synthesis=SynthesisConfig(max_new_tokens=0)),
              "call": AgentConfig(gate=GateConfig(call_max_new_tokens=0))}[field]
    with pytest.raises(ConfigError, match="max_new_tokens must be at least 1"):
        config.validate()


def test_score_refuses_a_continuation_past_the_window(qwen):
    prompt = qwen.chat_prompt([{"role": "user", "content": "Weather?"}])
    n = size(qwen, prompt)
    (unlimited,) = qwen.score(prompt, ["no"])
    qwen.context_window = n + size(qwen, "no")
    (exact,) = qwen.score(prompt, ["no"])  # just fits: scored, and as without a window
    assert exact.n_tokens == unlimited.n_tokens == size(qwen, "no") and exact.logprob == unlimited.logprob
    with pytest.raises(ContextLengthError, match=f"prompt 0 is {n:,} tokens and its longest continuation"):
        qwen.score(prompt, ["no", "a much longer continuation"])


# ---- the agent -------------------------------------------------------------------------------------------------

def test_a_too_long_input_is_refused_and_the_rest_of_the_batch_is_answered_as_alone(qwen):
    qwen.context_window = gate_size(qwen, weather_task()) + 40
    assert prompt_size(qwen, long_task()) > qwen.context_window
    scored = []
    score_many = qwen.score_many
    qwen.score_many = lambda prompts, conts, **kw: scored.extend(prompts) or score_many(prompts, conts, **kw)
    with agent(qwen) as one:
        alone = one.respond(weather_task())
    with agent(qwen) as one:
        refused, normal = one.respond_batch([long_task(), weather_task()])
    assert refused.error == "context_length" and refused.reason.startswith(
        f"the prompt is {prompt_size(qwen, long_task()):,} tokens; the model reads at most {qwen.context_window:,}")
    assert refused.raw == "" and refused.answer is None and refused.uncertainty is None
    assert refused.decision is Decision.SKIP and not refused.adapted and refused.train is None
    assert refused.synthetic == [] and refused.timings == dict.fromkeys(STAGES, 0.0)
    assert refused.to_dict()["error"] == "context_length" and normal.to_dict()["error"] is None
    assert qwen.chat_prompt(answer_messages(long_task(), FMT)) not in scored  # never gated
    assert normal.error is None and normal.adapted and alone.adapted and normal.raw == alone.raw
    assert normal.uncertainty.margin == pytest.approx(alone.uncertainty.margin, abs=1e-5)


def test_a_prompt_that_fits_without_its_longest_candidate_is_refused(qwen):
    qwen.context_window = gate_size(qwen, weather_task()) - 1
    r = agent(qwen, "base").respond(weather_task())
    assert r.error == "context_length" and "and its longest candidate action" in r.reason and r.raw == ""
    qwen.context_window += 1
    assert agent(qwen, "base").respond(weather_task()).error is None


def test_a_task_without_tools_needs_room_for_one_answer_token(qwen):
    task = weather_task(tools=[])
    qwen.context_window = prompt_size(qwen, task)
    assert agent(qwen, "base").respond(task).error == "context_length"
    qwen.context_window += 1
    r = agent(qwen, "base").respond(task)
    assert r.error is None and r.uncertainty is None and size(qwen, r.raw) <= 1


def test_the_answer_budget_is_what_the_window_leaves_after_the_prompt(qwen, monkeypatch):
    limits = []
    decode = engine.decode
    monkeypatch.setattr(engine, "decode", lambda *a, **kw: limits.append(kw["max_new_tokens"]) or decode(*a, **kw))
    qwen.context_window = gate_size(qwen, weather_task())  # the gate just fits, leaving fewer than 64 tokens
    r = agent(qwen, "base", max_new_tokens=64).respond(weather_task())
    assert r.error is None and limits == [[qwen.context_window - prompt_size(qwen, weather_task())]]


def test_synthetic_pairs_too_long_to_train_on_are_rejected(qwen):
    task = weather_task()
    example = size(qwen, qwen.chat_prompt(answer_messages(task.with_query(PAIR.query), FMT)))
    example += size(qwen, FMT.render(PAIR.answer, task.tools)) + 1  # the answer and its end-of-turn token
    qwen.context_window = max(example, gate_size(qwen, task))
    with agent(qwen, "tt-d", synth=FixedSynthesizer([LONG_PAIR, PAIR])) as one:
        r = one.respond(task)
    assert r.adapted and r.synthetic == [PAIR] and r.rejected == {"context_length": 1} and r.train.steps == 1
    r = agent(qwen, "tt-d", synth=FixedSynthesizer([LONG_PAIR])).respond(task)
    assert not r.adapted and r.synthetic == [] and r.train is None
    assert r.reason == "no valid synthetic pair (context_length: 1): answered unadapted"


def test_the_oracles_gold_pair_must_fit_too(qwen):
    qwen.context_window = gate_size(qwen, weather_task())  # the gold answer does not fit after the prompt
    r = agent(qwen, "oracle").respond(weather_task())
    assert r.error is None and not r.adapted and r.rejected == {"context_length": 1}


def test_a_synthesis_prompt_that_leaves_no_room_answers_unadapted(qwen):
    task = weather_task()
    synthesis = size(qwen, qwen.chat_prompt(synthesis_messages(task, FMT)))
    assert gate_size(qwen, task) <= synthesis  # the input itself fits
    qwen.context_window = synthesis
    r = agent(qwen, "tt-si").respond(task)
    assert r.error is None and r.decision is Decision.ADAPT and not r.adapted and r.synthetic == []
    assert r.reason == (f"the synthesis prompt is {synthesis:,} tokens; the model reads at most {synthesis:,}: "
                        "answered unadapted")


def test_demonstrations_that_do_not_fit_are_left_out(qwen):
    qwen.context_window = gate_size(qwen, weather_task()) + 5
    icl = agent(qwen, "tt-icl")
    icl.synthesizer = FixedSynthesizer([LONG_PAIR])
    r = icl.respond(weather_task())
    assert r.error is None and r.reason.endswith("; the demonstrations do not fit in the context window: "
                                                 "answered without them")
    assert r.raw == agent(qwen, "base").respond(weather_task()).raw


# ---- records, the CLI, calibration -----------------------------------------------------------------------------

def test_a_refused_item_is_recorded_wrong_with_its_reason():
    bench = get_benchmark("bfcl")
    fixtures = Path(__file__).parent / "fixtures" / "bfcl"
    reason = "the prompt is 12,177 tokens; the model reads at most 2,048"
    for split in ("irrelevance", "simple"):  # an empty output would pass an irrelevance item
        task = bench.load(fixtures, split)[0]
        r = Response(id=task.id, method="tt-si", uncertainty=None, decision=Decision.SKIP, reason=reason,
                     error="context_length")
        record = make_record(bench, split, task, 0, r)
        assert (record["correct"], record["error"], record["error_detail"]) == (False, "context_length", reason)
        assert record["raw"] == "" and record["base_correct"] is False and record["gate"] is None
        json.dumps(record)


def test_respond_on_a_too_long_task_is_one_error_line(toy_dir, tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps(weather_task(messages=[{"role": "user", "content": LONG_QUERY * 15}]).to_dict()))
    result = CliRunner().invoke(app, ["respond", "--model", str(toy_dir), "--task", str(path), "--method", "base",
                                      "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: task 'w-1' does not fit in the model's context window: "
                                                   "the prompt is "), result.stderr


class NoModel:
    def __getattr__(self, name):
        raise AssertionError("calibration scored before checking its settings")


@pytest.mark.parametrize(("percentile", "budget", "message"), [
    (math.nan, None, "percentile must be a finite number"),
    (math.inf, None, "percentile must be a finite number"),
    ("5", None, "percentile must be a finite number"),
    (True, None, "percentile must be a finite number"),
    (101, None, r"percentile must be in \[0, 100\]"),
    (None, math.nan, "budget must be a finite number"),
    (None, -0.1, r"budget must be in \[0, 1\]"),
    (None, 1.5, r"budget must be in \[0, 1\]"),
    (None, None, "exactly one of"),
    (5, 0.3, "exactly one of"),
])
def test_calibrate_refuses_settings_that_cannot_work_before_scoring(percentile, budget, message):
    with pytest.raises(ConfigError, match=message):
        calibrate_tau(NoModel(), [weather_task()], GateConfig(), percentile=percentile, budget=budget)


def test_calibrate_names_a_task_too_long_to_score(qwen):
    with pytest.raises(TaskError, match="no tasks"):
        calibrate_tau(qwen, [], GateConfig(), budget=0.5)
    task = weather_task()
    prompt = qwen.chat_prompt(answer_messages(task, FMT))
    expected = margin(relative_softmax([s.logprob for s in qwen.score(prompt, name_prefixes(task.tools, FMT))]))
    qwen.context_window = gate_size(qwen, task)  # just fits: its margin, as without a window
    assert gate_confidences(qwen, [task], GateConfig()) == [pytest.approx(expected, abs=1e-6)]
    with pytest.raises(ContextLengthError, match="task 'long' does not fit in the model's context window"):
        calibrate_tau(qwen, [weather_task(), long_task()], GateConfig(), budget=0.5)

"""`ttsi serve` with real models: the OpenAI SDK gets tool calls back, streamed and not, from the embedded SealShift
model and from a tiny Qwen2 on the real Qwen2.5 tokenizer and chat template (hermes tool calls)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import openai

from ttsi.agent import SelfImprovingAgent
from ttsi.benchmarks import get_benchmark
from ttsi.config import AgentConfig
from ttsi.formats import get_format, native_format
from ttsi.model import HFModel
from ttsi.sealshift.recipe import MODELS
from ttsi.serve.protocol import task_id
from ttsi.serve.settings import ServeSettings
from ttsi.task import Call, Task

from .conftest import weather_task
from .test_serve import KEY, LiveServer

pytestmark = pytest.mark.slow  # loads the embedded model, and trains the tiny one

QWEN_TOKENIZER = Path(__file__).resolve().parent / "fixtures" / "qwen2.5-tokenizer"
SEED = 3


def calls_of(completion: Any) -> list[tuple[str, dict[str, Any]]]:
    """The (name, arguments) of a completion's tool calls, checking each is well formed."""
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    out = []
    for tc in choice.message.tool_calls or []:
        assert tc.type == "function" and tc.id.startswith("call_")
        assert isinstance(tc.function.arguments, str)
        arguments = json.loads(tc.function.arguments)
        assert isinstance(arguments, dict)
        out.append((tc.function.name, arguments))
    return out


def streamed(client: openai.OpenAI, **args: Any) -> tuple[list[tuple[str, dict[str, Any]]], str | None, str]:
    """(calls, finish_reason, content) of a streamed completion, its tool-call deltas reassembled."""
    slots: dict[int, dict[str, str]] = {}
    finish, content = None, ""
    with client.chat.completions.create(**args, stream=True) as stream:
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            content += delta.content or ""
            for tc in delta.tool_calls or []:
                slot = slots.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += tc.id or ""
                if tc.function:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
    calls = []
    for _, slot in sorted(slots.items()):
        assert slot["id"].startswith("call_")
        arguments = json.loads(slot["arguments"])  # a JSON string, once reassembled
        assert isinstance(arguments, dict)
        calls.append((slot["name"], arguments))
    return calls, finish, content


def tool_names(tools: list[dict[str, Any]]) -> set[str]:
    return {t["function"]["name"] for t in tools}


# ---- the embedded SealShift model ---------------------------------------------------------------------------------

EMBEDDED = MODELS["base"].name
MAX_NEW = 128
# Out-of-domain test items: with the default tau, item 0 is confident (tt-si answers it with the base model) and
# item 1 is not (tt-si adapts on it), so both paths of the agent are served.
SEALSHIFT = get_benchmark("sealshift").load(None, "ood")[:2]


@pytest.fixture(scope="module")
def embedded():
    """The server for the embedded model, and the agent's own base answers to SEALSHIFT computed before it starts."""
    model = HFModel.from_pretrained(str(MODELS["base"]), dtype="float32", device="cpu")
    # Format: `ttsi eval --benchmark sealshift` prompts and parses in each task's own format, which for SealShift is
    # "json" (the model was trained on it). Its chat template takes no tools, so `auto` resolves to "json" as well:
    # the server's default `auto` answers requests in exactly the format the SealShift tasks use.
    assert native_format(model) is None and {t.format for t in SEALSHIFT} == {"json"}
    direct = []
    with SelfImprovingAgent(model, AgentConfig(method="base", seed=SEED, max_new_tokens=MAX_NEW)) as agent:
        for t in SEALSHIFT:  # the task the server makes of the request: its id follows from the content
            d = t.to_dict()
            task = Task.from_dict({"id": task_id(d["messages"], d["tools"], "json"), "messages": d["messages"],
                                   "tools": d["tools"], "format": "json"})
            direct.append([(c.name, c.arguments) for c in agent.respond(task).answer or []])
    settings = ServeSettings(model_name=EMBEDDED, format="auto", api_key=KEY, batch_wait_ms=5.0,
                             agent=AgentConfig(method="tt-si", max_new_tokens=MAX_NEW))
    with LiveServer(model, settings) as server:
        assert server.app.state.settings.format == "json"
        with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=300) as client:
            yield client, direct


def sealshift_args(i: int, method: str) -> dict[str, Any]:
    d = SEALSHIFT[i].to_dict()
    return {"model": EMBEDDED, "messages": d["messages"], "tools": d["tools"], "seed": SEED,
            "extra_body": {"ttsi": {"method": method}}}


def test_embedded_model_base_answers_as_the_agent(embedded):
    client, direct = embedded
    for i in range(len(SEALSHIFT)):
        completion = client.chat.completions.create(**sealshift_args(i, "base"))
        assert completion.model == EMBEDDED and completion.choices[0].finish_reason == "tool_calls"
        calls = calls_of(completion)
        assert calls and {name for name, _ in calls} <= tool_names(SEALSHIFT[i].to_dict()["tools"])
        assert calls == direct[i]  # what SelfImprovingAgent.respond answers, through the SDK
        assert completion.model_extra["ttsi"]["method"] == "base"
    calls, finish, content = streamed(client, **sealshift_args(1, "base"))
    assert finish == "tool_calls" and content == "" and calls == direct[1]


def test_embedded_model_tt_si_streamed_and_not(embedded):
    client, _ = embedded
    decisions = []
    for i in range(len(SEALSHIFT)):
        completion = client.chat.completions.create(**sealshift_args(i, "tt-si"))
        assert completion.choices[0].finish_reason == "tool_calls"
        calls = calls_of(completion)
        assert calls and {name for name, _ in calls} <= tool_names(SEALSHIFT[i].to_dict()["tools"])
        trace = completion.model_extra["ttsi"]
        assert trace["method"] == "tt-si" and trace["adapted"] == (i == 1)
        decisions.append(trace["decision"])
        if i == 1:  # the adapted answer, streamed: the same (the adaptation is seeded from the request)
            again, finish, _ = streamed(client, **sealshift_args(i, "tt-si"))
            assert finish == "tool_calls" and again == calls
    assert decisions == ["skip", "adapt"]


# ---- a tiny Qwen2 on the real Qwen2.5 tokenizer and chat template, trained to call -------------------------------

TINY = "tiny-qwen2.5-hermes"
TOOLS = [t.to_openai() for t in weather_task().tools]  # get_weather, send_email, set_alarm
TRAINED = [("What is the weather in Paris?", Call("get_weather", {"city": "Paris"})),
           ("Email bob@example.com please.", Call("send_email", {"to": "bob@example.com"}))]
# A conversation: the call, its result (a `tool` message answering the assistant's `tool_calls` by id), a new turn.
HISTORY = [
    {"role": "user", "content": TRAINED[0][0]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "user", "content": "Now set an alarm for 7."},
]
HISTORY_CALL = Call("set_alarm", {"hour": 7})
EXAMPLES = [*(([{"role": "user", "content": q}], call) for q, call in TRAINED), (HISTORY, HISTORY_CALL)]


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as a Qwen chat template takes them: tool-call arguments as objects, not JSON strings (the
    template writes them with `tojson`, which would quote a string; the server parses them, as vLLM does)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [tc | {"function": tc["function"] | {"arguments": json.loads(tc["function"]["arguments"])}}
                     for tc in m["tool_calls"]]
            m = m | {"tool_calls": calls}
        out.append(m)
    return out


def train_tiny_qwen(steps: int = 100, lr: float = 1e-2) -> HFModel:
    """A two-layer Qwen2 (hidden 32, tied embeddings, the full 151,665-token vocabulary) trained with AdamW to answer
    each of EXAMPLES, as the Qwen template with TOOLS renders it, with its hermes call and `<|im_end|>`.

    Only the embedding rows of the tokens in the training text are trained; every other row is zero, so its logit
    is exactly 0 and the full-vocabulary softmax is the used rows' logits plus one column log(#other tokens). The
    loss is that exact softmax on the answer tokens, without a 151,665-wide matrix in every step (seconds, not
    minutes, on two cores).
    """
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model = HFModel(Qwen2ForCausalLM(config), tokenizer, name=TINY)
    hermes = get_format("hermes")
    rows = [(model.encode(model.chat_prompt(template_messages(messages), tools=TOOLS)),
             model.encode(hermes.render([call]) + "<|im_end|>")) for messages, call in EXAMPLES]
    width = max(len(p) + len(a) for p, a in rows)
    sequences = [p + a + [tokenizer.pad_token_id] * (width - len(p) - len(a)) for p, a in rows]
    used = sorted({t for s in sequences for t in s})
    index = {t: i for i, t in enumerate(used)}
    x = torch.tensor([[index[t] for t in s] for s in sequences])
    row = torch.tensor([i for i, (_, a) in enumerate(rows) for _ in a])
    position = torch.tensor([len(p) - 1 + j for p, a in rows for j in range(len(a))])  # predicts answer token j
    target = torch.tensor([index[t] for _, a in rows for t in a])
    net = model.model
    weight = net.get_input_embeddings().weight  # also the output matrix (tied)
    embeddings = torch.nn.Parameter(weight.detach()[used].clone())
    weight.requires_grad_(False)
    others = torch.full((len(target), 1), math.log(config.vocab_size - len(used)))
    optimizer = torch.optim.AdamW([embeddings, *(p for p in net.parameters() if p.requires_grad)], lr=lr,
                                  weight_decay=0.0)
    net.train()
    for _ in range(steps):
        hidden = net.model(inputs_embeds=embeddings[x]).last_hidden_state[row, position]
        logits = torch.cat([hidden @ embeddings.T, others], dim=1)
        loss = torch.nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        weight.zero_()
        weight[used] = embeddings
    weight.requires_grad_(True)
    assert loss.item() < 0.1, f"the tiny model did not learn its calls (loss {loss.item():.3f})"
    return model


@pytest.fixture(scope="module")
def tiny():
    model = train_tiny_qwen()
    assert native_format(model) == "hermes"
    settings = ServeSettings(model_name=TINY, format="auto", api_key=KEY, batch_wait_ms=5.0,
                             agent=AgentConfig(method="base", max_new_tokens=48))
    with LiveServer(model, settings) as server:
        assert server.app.state.settings.format == "hermes"  # `auto`: the Qwen template's own tool calls
        with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=120) as client:
            yield client


def tiny_args(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": TINY, "messages": messages, "tools": TOOLS, "extra_body": {"ttsi": {"method": "base"}}}


@pytest.mark.parametrize(("query", "call"), TRAINED, ids=[c.name for _, c in TRAINED])
def test_tiny_qwen_hermes_tool_calls_streamed_and_not(tiny, query, call):
    args = tiny_args([{"role": "user", "content": query}])
    completion = tiny.chat.completions.create(**args)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert calls_of(completion) == [(call.name, call.arguments)]
    assert completion.model_extra["ttsi"]["uncertainty"]["candidates"] == [t["function"]["name"] for t in TOOLS]
    calls, finish, content = streamed(tiny, **args)
    assert calls == [(call.name, call.arguments)] and finish == "tool_calls" and content == ""


def test_tiny_qwen_multi_turn_with_a_tool_result(tiny):
    raw = tiny.chat.completions.with_raw_response.create(**tiny_args(HISTORY))
    assert raw.status_code == 200
    completion = raw.parse()
    assert len(completion.choices) == 1 and completion.choices[0].index == 0
    assert completion.choices[0].finish_reason == "tool_calls" and completion.choices[0].message.content is None
    assert calls_of(completion) == [(HISTORY_CALL.name, HISTORY_CALL.arguments)]
    assert completion.usage.prompt_tokens > 0
    calls, finish, _ = streamed(tiny, **tiny_args(HISTORY))
    assert calls == [(HISTORY_CALL.name, HISTORY_CALL.arguments)] and finish == "tool_calls"

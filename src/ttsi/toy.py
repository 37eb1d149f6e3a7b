"""A toy tool-calling world and a tiny model trained on it: the stand-in until the embedded default model exists.

Twelve everyday tools with templated requests. The model is trained on eight of them ("seen") to answer and to
write new request/answer pairs (the synthesis instruction, as an instruction-tuned model would have learnt);
the other four ("unseen") give a small distribution shift. It is a scaffold to show the loop end to end on a
laptop, not a benchmark: its numbers say nothing about the paper's claims.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttsi.formats import get_format
from ttsi.prompts import answer_messages, render_pair, synthesis_messages
from ttsi.task import Call, Task, Tool

_S, _I, _N = {"type": "string"}, {"type": "integer"}, {"type": "number"}
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Denver", "Seoul", "Rome", "Nairobi", "Quito"]
PEOPLE = ["ana@mail.com", "li@work.org", "sam@home.net", "kim@lab.io", "raj@shop.com"]
THINGS = ["the report", "lunch plans", "the invoice", "our trip", "the meeting"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "INR"]
SONGS = ["Yellow", "Imagine", "Hello", "Runaway", "Blue"]
DISHES = ["lasagna", "pho", "tacos", "curry", "risotto"]
WORDS = ["good morning", "thank you", "where is the station", "see you soon"]
LANGS = ["French", "German", "Spanish", "Italian"]
SYMBOLS = ["AAPL", "TSLA", "MSFT", "NVDA", "AMZN"]
DAYS = ["Monday", "Friday", "Sunday", "tomorrow"]


def _tool(name: str, description: str, props: dict[str, Any], required: list[str]) -> Tool:
    return Tool(name, description, {"type": "object", "properties": props, "required": required})


# name -> (tool, [(template, argument builder)])
_WORLD: dict[str, tuple[Tool, list[tuple[str, Callable[[random.Random], dict[str, Any]]]]]] = {
    "get_weather": (_tool("get_weather", "Current weather in a city", {"city": _S}, ["city"]), [
        ("What is the weather in {city}?", lambda r: {"city": r.choice(CITIES)}),
        ("Is it raining in {city} right now?", lambda r: {"city": r.choice(CITIES)})]),
    "send_email": (_tool("send_email", "Send an email", {"to": _S, "subject": _S}, ["to", "subject"]), [
        ("Email {to} about {subject}.", lambda r: {"to": r.choice(PEOPLE), "subject": r.choice(THINGS)}),
        ("Send a message to {to} with subject {subject}.",
         lambda r: {"to": r.choice(PEOPLE), "subject": r.choice(THINGS)})]),
    "set_alarm": (_tool("set_alarm", "Set an alarm", {"hour": _I, "minute": _I}, ["hour", "minute"]), [
        ("Wake me up at {hour}:{minute}.", lambda r: {"hour": r.randint(5, 11), "minute": r.choice([15, 30, 45])}),
        ("Set an alarm for {hour}:{minute}.", lambda r: {"hour": r.randint(1, 12), "minute": r.choice([10, 20, 40])})]),
    "convert_currency": (_tool("convert_currency", "Convert money between currencies",
                               {"amount": _N, "source": _S, "target": _S}, ["amount", "source", "target"]), [
        ("Convert {amount} {source} to {target}.",
         lambda r: {"amount": r.choice([5, 20, 100, 250]), "source": r.choice(CURRENCIES),
                    "target": r.choice(CURRENCIES)}),
        ("How much is {amount} {source} in {target}?",
         lambda r: {"amount": r.choice([3, 40, 75]), "source": r.choice(CURRENCIES), "target": r.choice(CURRENCIES)})]),
    "play_song": (_tool("play_song", "Play a song", {"title": _S}, ["title"]), [
        ("Play {title}.", lambda r: {"title": r.choice(SONGS)}),
        ("Put on the song {title}, please.", lambda r: {"title": r.choice(SONGS)})]),
    "find_recipe": (_tool("find_recipe", "Find a recipe for a dish", {"dish": _S}, ["dish"]), [
        ("How do I cook {dish}?", lambda r: {"dish": r.choice(DISHES)}),
        ("Find me a recipe for {dish}.", lambda r: {"dish": r.choice(DISHES)})]),
    "get_stock_price": (_tool("get_stock_price", "Latest stock price", {"symbol": _S}, ["symbol"]), [
        ("What is {symbol} trading at?", lambda r: {"symbol": r.choice(SYMBOLS)}),
        ("Price of {symbol} stock today?", lambda r: {"symbol": r.choice(SYMBOLS)})]),
    "book_table": (_tool("book_table", "Book a restaurant table", {"city": _S, "people": _I}, ["city", "people"]), [
        ("Book a table for {people} in {city}.", lambda r: {"people": r.randint(2, 8), "city": r.choice(CITIES)}),
        ("Reserve dinner for {people} people in {city}.",
         lambda r: {"people": r.randint(2, 6), "city": r.choice(CITIES)})]),
    # unseen during training: the shift
    "translate_text": (_tool("translate_text", "Translate text", {"text": _S, "language": _S}, ["text", "language"]), [
        ("Translate {text} into {language}.", lambda r: {"text": r.choice(WORDS), "language": r.choice(LANGS)}),
        ("How do you say {text} in {language}?", lambda r: {"text": r.choice(WORDS), "language": r.choice(LANGS)})]),
    "order_taxi": (_tool("order_taxi", "Order a taxi to a city", {"city": _S}, ["city"]), [
        ("Get me a taxi to {city}.", lambda r: {"city": r.choice(CITIES)}),
        ("I need a cab to {city}.", lambda r: {"city": r.choice(CITIES)})]),
    "create_reminder": (_tool("create_reminder", "Create a reminder", {"note": _S, "day": _S}, ["note", "day"]), [
        ("Remind me about {note} on {day}.", lambda r: {"note": r.choice(THINGS), "day": r.choice(DAYS)}),
        ("Make a reminder for {note} {day}.", lambda r: {"note": r.choice(THINGS), "day": r.choice(DAYS)})]),
    "get_news": (_tool("get_news", "Latest news about a city", {"city": _S}, ["city"]), [
        ("What is happening in {city} today?", lambda r: {"city": r.choice(CITIES)}),
        ("Show me the news from {city}.", lambda r: {"city": r.choice(CITIES)})]),
}
SEEN = list(_WORLD)[:8]
UNSEEN = list(_WORLD)[8:]
TOOLS = {name: tool for name, (tool, _) in _WORLD.items()}


def sample_request(name: str, rng: random.Random) -> tuple[str, Call]:
    """One request for tool `name` and its gold call."""
    template, build = rng.choice(_WORLD[name][1])
    args = build(rng)
    return template.format(**args), Call(name, args)


def make_tasks(n: int, gold_tools: list[str], seed: int, n_tools: int = 3, prefix: str = "toy") -> list[Task]:
    """n tasks whose gold tool is drawn from `gold_tools`, each offering n_tools tools (the gold one included)."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        gold = rng.choice(gold_tools)
        query, call = sample_request(gold, rng)
        names = [gold, *rng.sample([t for t in _WORLD if t != gold], n_tools - 1)]
        rng.shuffle(names)
        tasks.append(Task(id=f"{prefix}-{i}", messages=[{"role": "user", "content": query}],
                          tools=[TOOLS[t] for t in names], answer=[call]))
    return tasks


def training_pairs(tasks: list[Task], seed: int) -> list[tuple[list[dict[str, str]], str]]:
    """(messages, reply) pairs: every task's answer, and a synthesis reply written for the same tools."""
    rng = random.Random(seed)
    fmt = get_format("json")
    pairs = []
    for task in tasks:
        assert task.answer is not None
        pairs.append((answer_messages(task, fmt), fmt.render(task.answer, task.tools)))
        query, call = sample_request(task.answer[0].name, rng)
        if query != task.query:
            pairs.append((synthesis_messages(task, fmt), render_pair(query, [call], fmt, task.tools)))
    return pairs


def build_toy_model(out_dir: str | Path, steps: int = 1200, n_train: int = 600, seed: int = 0, lr: float = 1.2e-2,
                    batch_size: int = 8, progress: Callable[[int, float], None] | None = None,
                    **sizes: Any) -> Path:
    """Train the toy tool-caller on the seen tools and save it (tokenizer included) to `out_dir`."""
    from transformers import AutoModelForCausalLM

    from ttsi.sealshift.train import train_causal_lm
    from ttsi.tiny_models import build_tiny_model, train_tokenizer

    pairs = training_pairs(make_tasks(n_train, SEEN, seed=seed, prefix="train"), seed=seed + 1)
    corpus = [m["content"] for messages, _ in pairs for m in messages] + [reply for _, reply in pairs]
    tokenizer = train_tokenizer(corpus, vocab_size=sizes.pop("vocab_size", 700))
    out = build_tiny_model(out_dir, tokenizer, seed=seed, **{"hidden": 64, "layers": 2, **sizes})
    model = AutoModelForCausalLM.from_pretrained(out)
    examples = [(tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True), r) for m, r in pairs]
    train_causal_lm(model, tokenizer, examples, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                    progress=progress)
    model.save_pretrained(out)
    return out

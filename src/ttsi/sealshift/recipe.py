"""`ttsi train-base`: the embedded default model and its stronger teacher, trained from scratch on SealShift.

Two stages: a copy warm-up (repeat spans of the training text, so the model learns to look back and copy names
and values from its context), then the tool-calling task itself.

The base model learns what an instruction-tuned tool caller knows: answer a request with a JSON call (sometimes
after demonstrations, so TT-ICL has something to work with), and write a new request with its call for a set of
tools (the synthesis instruction, so self-augmentation is meaningful). It sees only in-domain fields. The teacher
is the same recipe trained on more fields: the in-domain data plus the labelled out-of-domain split (never the
test split), which makes it the stronger writer of out-of-domain examples that TT-D assumes. To save CPU time
it starts from the base model's weights and tokenizer and continues training on the wider mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttsi.benchmarks.sealshift import SPLITS_DIR, load_split
from ttsi.formats import get_format
from ttsi.prompts import answer_messages, render_pair, synthesis_messages
from ttsi.task import Call, Task, Tool

if TYPE_CHECKING:
    from ttsi.sealshift.train import TrainState

Messages = list[dict[str, str]]
ASSETS = Path(__file__).resolve().parents[1] / "assets"
MODELS = {"base": ASSETS / "sealshift-base", "teacher": ASSETS / "sealshift-teacher"}


@dataclass(frozen=True)
class Recipe:
    """Everything the trained weights depend on (with the data files, whose hashes go in `train_info.json`)."""

    splits: tuple[str, ...] = ("train",)
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    vocab_size: int = 2048
    camel_split: bool = False  # the tokenizer also cuts camelCase names into words (`ttsi.tiny_models.CAMEL_SPLIT`)
    steps: int = 3600
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    request_loss: bool = True  # loss on the request too (see `supervised`): it learns to copy from its context
    synthesis_fraction: float = 0.5  # share of tasks that also teach the synthesis instruction
    demo_fraction: float = 0.1  # share of answer examples preceded by one demonstration (few-shot)
    rename_fraction: float = 0.5  # share of examples whose tools get made-up names (copy, don't memorise)
    rename_words: str = "names"  # made-up names from other tools' name words, or from the tool's "description"
    name_weight: float = 1.0  # loss weight of the tool-name tokens in every call the model writes (others: 1)
    copy_steps: int = 600  # warm-up first: repeat a span of the training text (see `copy_examples`)
    copy_batch_size: int = 32
    real_repeat: int = 4  # each real Seal-Tools request appears this often (see `weighted`)


@dataclass(frozen=True)
class TeacherRecipe:
    """The teacher: the base model trained further on in-domain data plus the labelled out-of-domain split."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 1
    real_repeat: int = 4  # as the base recipe's
    ood_share: float = 0.5  # expected share of out-of-domain examples in a batch
    request_loss: bool = True
    synthesis_fraction: float = 0.5
    demo_fraction: float = 0.1
    rename_fraction: float = 0.5
    rename_words: str = "names"


TRAINABLE_SPLITS = ("train", "ood_train")  # what a recipe may train on: never a test split
MIN_VOCAB = 256 + 3  # the byte-level alphabet and ttsi.tiny_models.SPECIAL_TOKENS: fewer learn no merges


def check_recipe(recipe: Recipe | TeacherRecipe) -> None:
    """Raise ConfigError naming the first field a training run cannot work with (before any data is read)."""
    from ttsi.errors import ConfigError

    r = recipe
    checks = [
        (r.steps >= 1 and r.batch_size >= 1, f"steps and batch_size must be at least 1, got {r.steps} and "
                                              f"{r.batch_size}"),
        (r.lr > 0, f"lr must be positive, got {r.lr}"),
        (r.real_repeat >= 1, f"real_repeat must be at least 1, got {r.real_repeat}"),
        (r.rename_words in ("names", "description"), f"rename_words must be 'names' or 'description', got "
                                                     f"{r.rename_words!r}"),
        *((0 <= getattr(r, f) <= 1, f"{f} must be in [0, 1], got {getattr(r, f)}")
          for f in ("synthesis_fraction", "demo_fraction", "rename_fraction")),
    ]
    if isinstance(r, TeacherRecipe):
        checks.append((0 < r.ood_share < 1, f"ood_share must be in (0, 1), got {r.ood_share}"))
    else:
        unknown = [s for s in r.splits if s not in TRAINABLE_SPLITS]
        checks += [
            (bool(r.splits) and not unknown, f"splits must name some of {', '.join(TRAINABLE_SPLITS)} (never a test "
                                             f"split), got {','.join(r.splits) or 'none'}"),
            *shape_checks(r),
            (r.name_weight > 0, f"name_weight must be positive, got {r.name_weight}"),
        ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"recipe: {message}")


def shape_checks(r: Any) -> list[tuple[bool, str]]:
    """(ok, message) for what every from-scratch recipe shares: the model's shape, the tokenizer's size, the copy
    warm-up (`Recipe`, `ttsi.arithshift.recipe.ArithRecipe`)."""
    return [
        (min(r.hidden, r.layers, r.heads, r.kv_heads, r.intermediate) >= 1,
         "hidden, layers, heads, kv_heads and intermediate must be at least 1"),
        (r.hidden % max(r.heads, 1) == 0 and (r.hidden // max(r.heads, 1)) % 2 == 0,
         f"hidden ({r.hidden}) must be heads ({r.heads}) times an even head size (rotary embeddings)"),
        (r.heads % max(r.kv_heads, 1) == 0, f"heads ({r.heads}) must be a multiple of kv_heads ({r.kv_heads})"),
        (r.vocab_size > MIN_VOCAB, f"vocab_size must be above {MIN_VOCAB} (the 256 bytes and 3 special tokens), "
                                 f"got {r.vocab_size}"),
        (r.copy_steps >= 0 and r.copy_batch_size >= 1, "copy_steps must be at least 0 and copy_batch_size at least 1"),
    ]


def with_settings(recipe: Any, settings: list[str], check: Callable[[Any], None] = check_recipe) -> Any:
    """`recipe` with FIELD=VALUE settings applied (`ttsi train-base --set`), each value parsed as its field's type,
    then checked by `check`."""
    from ttsi.errors import ConfigError

    fields = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}
    changes: dict[str, Any] = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ConfigError(f"--set {setting!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        default = fields[name]
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false"):
                    raise ValueError
                value: Any = text.lower() == "true"
            elif isinstance(default, tuple):
                value = tuple(x.strip() for x in text.split(",") if x.strip())
            else:
                value = type(default)(text)
        except ValueError:
            kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(default), "text")
            raise ConfigError(f"--set {setting!r}: {name} must be {kind}, like its default {default!r}") from None
        changes[name] = value
    changed = dataclasses.replace(recipe, **changes)
    check(changed)
    return changed


def training_examples(tasks: list[Task], seed: int, synthesis_fraction: float, demo_fraction: float,
                      rename_fraction: float = 0.0, rename_words: str = "names") -> list[tuple[Messages, str]]:
    """(messages, reply) pairs: every task's answer, and for a share of them a synthesis reply for its tools.

    A synthesis reply is another request for the same gold tool with its call; a demonstration is another
    request for the same tool with its answer, shown before the task as TT-ICL shows its synthetic pairs. In a
    `rename_fraction` share of the examples every tool gets a made-up name (consistently in the tool list, the
    demonstration and the reply), so that the only way to write the right name is to copy it from the prompt.
    `rename_words` says where a made-up name's words come from: "names", random words of other tools' names (the
    name says nothing about the tool), or "description", words of the tool's own description (the name still
    shares words with the request, as real names do, but cannot be remembered).
    """
    if rename_words not in ("names", "description"):
        raise ValueError(f"rename_words must be 'names' or 'description', not {rename_words!r}")
    rng = random.Random(seed)
    fmt = get_format("json")
    by_tool: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        by_tool[t.answer[0].name].append(t)  # type: ignore[index]
    words = sorted({w for name in by_tool for w in _name_words(name)[1:]})
    pairs = []
    for task in tasks:
        assert task.answer is not None
        siblings = [t for t in by_tool[task.answer[0].name] if t.query != task.query]
        names = ({} if not words or rng.random() >= rename_fraction
                 else _renaming(task, rng, words) if rename_words == "names" else _described(task, rng))
        shown = _renamed(task, names)
        demos = ()
        if siblings and rng.random() < demo_fraction:
            other = _renamed(rng.choice(siblings), names)
            demos = ((other.query, fmt.render(other.answer or [], other.tools)),)
        pairs.append((answer_messages(shown, fmt, demos), fmt.render(shown.answer or [], shown.tools)))
        if siblings and rng.random() < synthesis_fraction:
            other = _renamed(rng.choice(siblings), names)
            pairs.append((synthesis_messages(shown, fmt), render_pair(other.query, other.answer or [], fmt,
                                                                      shown.tools)))
    rng.shuffle(pairs)
    return pairs


def weighted(tasks: list[Task], real_repeat: int) -> list[Task]:
    """The tasks with every real request (subset "real") repeated `real_repeat` times in all.

    Real Seal-Tools requests are under 2% of the training split but are how people actually ask: values without
    quotes, paraphrased descriptions. Each repeat gets its own made-up tool names and demonstrations, so repeating
    them teaches reading such requests rather than memorising these ones.
    """
    return tasks + [t for t in tasks if t.meta.get("subset") == "real"] * (real_repeat - 1)


def _name_words(name: str) -> list[str]:
    return re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)


def _renaming(task: Task, rng: random.Random, words: list[str]) -> dict[str, str]:
    """A made-up name for each of the task's tools: its first word (the verb), then 1-3 random name words."""
    out = {}
    for tool in task.tools:
        verb = (_name_words(tool.name) or ["call"])[0]
        out[tool.name] = verb + "".join(w[:1].upper() + w[1:] for w in rng.sample(words, rng.randint(1, 3)))
    return out


_STOP = frozenset({"a", "an", "and", "any", "are", "as", "at", "be", "by", "certain", "for", "from", "given", "in",
                   "into", "is", "it", "its", "of", "on", "or", "particular", "specific", "the", "their", "this", "to",
                   "with"})


def _described(task: Task, rng: random.Random) -> dict[str, str]:
    """A made-up name for each of the task's tools: its verb, then 1-3 words of its description, in their order."""
    out = {}
    for tool in task.tools:
        verb = (_name_words(tool.name) or ["call"])[0]
        words = [w for w in dict.fromkeys(re.findall(r"[a-z0-9]+", tool.description.lower()))
                 if w not in _STOP and w != verb.lower()]
        if not words:
            continue
        picked = sorted(rng.sample(range(len(words)), min(len(words), rng.randint(1, 3))))
        out[tool.name] = verb + "".join(words[i][:1].upper() + words[i][1:] for i in picked)
    return out


def _renamed(task: Task, names: dict[str, str]) -> Task:
    if not names:
        return task
    tools = [Tool(names.get(t.name, t.name), t.description, t.parameters) for t in task.tools]
    answer = [Call(names.get(c.name, c.name), c.arguments) for c in task.answer or []]
    return dataclasses.replace(task, tools=tools, answer=answer)


def copy_examples(texts: list[str], tokenizer: Any, count: int, seed: int,
                  lengths: tuple[int, int] = (8, 48)) -> list[tuple[str, str]]:
    """(span, span) pairs: a random span of 8-48 tokens of the training text, to be written again after itself.

    A model trained from scratch on the tool-calling data alone does not learn to copy from its context within a
    CPU budget: it writes names and values from memory. Repeating spans of the same text is the cheapest lesson
    in copying (the loss on a repeat falls only when the model looks back), so the recipe starts with it.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        ids = tokenizer(rng.choice(texts), add_special_tokens=False)["input_ids"]
        size = rng.randint(*lengths)
        start = rng.randrange(max(1, len(ids) - size))
        span = tokenizer.decode(ids[start:start + size])
        pairs.append((span, span))
    return pairs


def supervised(tokenizer: Any, messages: Messages, reply: str, request_loss: bool) -> tuple[str, str]:
    """(context, supervised text): the loss covers the reply, and with `request_loss` the final request too.

    Predicting the request teaches a model trained from scratch to copy from its context (requests reuse the
    tool descriptions, and their values come back in the call). The tool list itself stays out of the loss:
    learning to write tool names from nothing after `"name": "` would teach it to invent names in its answers.
    The split falls on a special token, so the two parts tokenize exactly as the whole prompt does.
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not request_loss or len(messages) < 2 or messages[-1]["role"] != "user":  # synthesis: tools in the request
        return full, reply
    context = tokenizer.apply_chat_template(messages[:-1], tokenize=False)
    assert full.startswith(context), "the chat template must render a prefix of turns as a prefix"
    return context, full[len(context):] + reply


_CALL_NAME = re.compile(r'"name": "([^"]*)"')


def call_names(text: str) -> list[tuple[int, int]]:
    """The character ranges of the tool names in the JSON calls of `text` (for `Recipe.name_weight`).

    It takes the value of every `"name": "..."` pair, so an argument called `name` counts too (1.7% of the
    training answers have one); the runs that measured `name_weight` used exactly this.
    """
    return [m.span(1) for m in _CALL_NAME.finditer(text)]


def recipe_pairs(recipe: Recipe | TeacherRecipe, tasks: list[Task]) -> list[tuple[Messages, str]]:
    """`training_examples` of `tasks` with the recipe's seed, fractions and made-up-name words."""
    return training_examples(tasks, recipe.seed, recipe.synthesis_fraction, recipe.demo_fraction,
                             recipe.rename_fraction, recipe.rename_words)


def recipe_tokenizer(recipe: Recipe, pairs: list[tuple[Messages, str]]) -> Any:
    """The recipe's BPE tokenizer, trained on the text of its (messages, reply) training pairs."""
    from ttsi.tiny_models import CAMEL_SPLIT, QWEN2_SPLIT, train_tokenizer

    corpus = [m["content"] for messages, _ in pairs for m in messages] + [reply for _, reply in pairs]
    return train_tokenizer(corpus, vocab_size=recipe.vocab_size,
                           split=CAMEL_SPLIT if recipe.camel_split else QWEN2_SPLIT)


def model_sizes(recipe: Recipe) -> dict[str, int]:
    """The recipe's model shape, as `ttsi.tiny_models.tiny_config` and `build_tiny_model` take it."""
    return {"hidden": recipe.hidden, "layers": recipe.layers, "heads": recipe.heads, "kv_heads": recipe.kv_heads,
            "intermediate": recipe.intermediate}


STATES = {"copy": "resume-copy.pt", "task": "resume-task.pt", "teacher": "resume-teacher.pt"}


def stage_states(out: Path, stages: tuple[str, ...], resume: bool, meta: dict[str, Any]) -> dict[str, TrainState]:
    """Each stage's resumable training state in `out`: kept by an interrupted run, removed when a run ends.

    A fresh run clears what an earlier interrupted one left; `resume` needs it to be there.
    """
    from ttsi.errors import ConfigError
    from ttsi.sealshift.train import TrainState

    states = {stage: TrainState(out / STATES[stage], {**meta, "stage": stage}) for stage in stages}
    if resume and not any(st.path.exists() for st in states.values()):
        raise ConfigError(f"{out} holds no interrupted run to resume ({', '.join(STATES[s] for s in stages)})")
    if not resume:
        for st in states.values():
            st.path.unlink(missing_ok=True)
    return states


def resumed_steps(states: dict[str, TrainState]) -> dict[str, int]:
    """The step each saved stage had reached, for `train_info.json`."""
    import torch

    return {stage: int(torch.load(st.path, weights_only=True)["step"]) for stage, st in states.items()
            if st.path.exists()}


def _data_digest(data: Path, splits: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in ("tools", *splits):
        digest.update((data / f"{name}.jsonl").read_bytes())
    return digest.hexdigest()


def train_base(out_dir: str | Path, recipe: Recipe = Recipe(), data: Path = SPLITS_DIR,
               progress: Callable[[int, float], None] | None = None, checkpoints: bool = False,
               workers: int = 1, resume: bool = False) -> dict[str, Any]:
    """Train a tokenizer and a Qwen2-architecture model from scratch; save both and `train_info.json`.

    With `checkpoints`, the model is also saved every 200 steps to `out_dir/checkpoint-STEP` (with its tokenizer).
    `workers > 1` trains data-parallel on that many processes (the same steps up to float rounding, so the
    weights are reproducible for a given number of workers, not across numbers of workers).
    Training state is saved in `out_dir` every 200 steps and on Ctrl-C; `resume` continues an interrupted run
    with the same recipe, data and workers, and ends with the weights an uninterrupted run has, bit for bit.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from ttsi.sealshift.train import train_causal_lm
    from ttsi.tiny_models import build_tiny_model

    check_recipe(recipe)
    start = started()
    meta = {"recipe": dataclasses.asdict(recipe), "workers": workers, "data": _data_digest(data, recipe.splits)}
    states = stage_states(Path(out_dir), ("copy", "task"), resume, meta)
    resumed = resumed_steps(states)
    tasks = weighted([t for split in recipe.splits for t in load_split(split, data)], recipe.real_repeat)
    pairs = recipe_pairs(recipe, tasks)
    tokenizer = recipe_tokenizer(recipe, pairs)
    out = build_tiny_model(out_dir, tokenizer, seed=recipe.seed, **model_sizes(recipe))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    examples = [supervised(tokenizer, m, r, recipe.request_loss) for m, r in pairs]
    copy_losses: list[float] = []
    if recipe.copy_steps:
        texts = [context + reply for context, reply in examples]
        spans = copy_examples(texts, tokenizer, recipe.copy_steps * recipe.copy_batch_size, recipe.seed)
        copy_losses = train_causal_lm(model, tokenizer, spans, steps=recipe.copy_steps, lr=recipe.lr,
                                      batch_size=recipe.copy_batch_size, seed=recipe.seed, progress=progress,
                                      workers=workers, state=states["copy"])
    shifted = (lambda step, loss: progress(recipe.copy_steps + step, loss)) if progress else None
    losses = train_causal_lm(model, tokenizer, examples, steps=recipe.steps, lr=recipe.lr,
                             batch_size=recipe.batch_size, seed=recipe.seed, progress=shifted,
                             checkpoint=_saver(out, tokenizer) if checkpoints else None,
                             emphasis=(call_names, recipe.name_weight) if recipe.name_weight != 1.0 else None,
                             workers=workers, state=states["task"])
    model.save_pretrained(out)
    info = save_info(out, model, recipe, len(examples), len({t.id for t in tasks}), losses, start, data,
                      workers=workers, **({"resumed": resumed} if resumed else {}),
                      copy_final_loss=sum(copy_losses[-50:]) / len(copy_losses[-50:]) if copy_losses else None)
    finish_stages(states)
    return info


def finish_stages(states: dict[str, TrainState]) -> None:
    for st in states.values():
        st.path.unlink(missing_ok=True)


def _saver(out: Path, tokenizer: Any) -> Callable[[int, Any], None]:
    def save(step: int, model: Any) -> None:
        model.save_pretrained(out / f"checkpoint-{step}")
        tokenizer.save_pretrained(out / f"checkpoint-{step}")

    return save


def train_teacher(base_dir: str | Path, out_dir: str | Path, recipe: TeacherRecipe = TeacherRecipe(),
                  data: Path = SPLITS_DIR, progress: Callable[[int, float], None] | None = None,
                  workers: int = 1, resume: bool = False) -> dict[str, Any]:
    """Continue the base model's training on in-domain plus labelled out-of-domain data; save the teacher.

    Resumable as `train_base` is.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsi.sealshift.train import train_causal_lm

    check_recipe(recipe)
    start = started()
    base_files = Path(base_dir) / "model.safetensors"
    meta = {"recipe": dataclasses.asdict(recipe), "workers": workers,
            "data": _data_digest(data, ("train", "ood_train")),
            "base": hashlib.sha256(base_files.read_bytes()).hexdigest() if base_files.is_file() else str(base_dir)}
    states = stage_states(Path(out_dir), ("teacher",), resume, meta)
    resumed = resumed_steps(states)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    tasks = {split: load_split(split, data) for split in ("train", "ood_train")}
    tasks["train"] = weighted(tasks["train"], recipe.real_repeat)
    inside, outside = (recipe_pairs(recipe, tasks[s]) for s in ("train", "ood_train"))
    repeat = max(1, round(recipe.ood_share / (1 - recipe.ood_share) * len(inside) / len(outside)))
    pairs = inside + outside * repeat
    examples = [supervised(tokenizer, m, r, recipe.request_loss) for m, r in pairs]
    losses = train_causal_lm(model, tokenizer, examples, steps=recipe.steps, lr=recipe.lr,
                             batch_size=recipe.batch_size, seed=recipe.seed, progress=progress, workers=workers,
                             state=states["teacher"])
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    info = save_info(out, model, recipe, len(examples), len({t.id for ts in tasks.values() for t in ts}), losses,
                      start, data, workers=workers, base=str(base_dir), ood_repeat=repeat,
                      **({"resumed": resumed} if resumed else {}))
    finish_stages(states)
    return info


def started() -> tuple[float, str | None]:
    """When a run starts and the commit it starts from (read now: the checkout may move on while it trains)."""
    from ttsi.provenance import git_commit

    return time.perf_counter(), git_commit()


def save_info(out: Path, model: Any, recipe: Any, examples: int, tasks: int, losses: list[float],
               started: tuple[float, str | None], data: Path, **extra: Any) -> dict[str, Any]:
    """`train_info.json` beside the weights: the recipe, the data counts, time, versions and starting commit."""
    import torch

    from ttsi.provenance import versions

    start, commit = started
    info = {"recipe": dataclasses.asdict(recipe), "examples": examples, "tasks": tasks,
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(time.perf_counter() - start),
            "torch_threads": torch.get_num_threads(), "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "data": json.loads((data / "PROVENANCE.json").read_text())["counts"], "versions": versions(),
            "git_commit": commit, **extra}
    (out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info

"""The base-model recipe: deterministic, trains on what it says, and `ttsi train-base` around it."""

import dataclasses
import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from ttsi import tiny_models
from ttsi.benchmarks.sealshift import load_split
from ttsi.sealshift import recipe
from ttsi.sealshift.derive import write_splits
from ttsi.sealshift.recipe import Recipe, TeacherRecipe, copy_examples, train_base, train_teacher, training_examples

SMALL = Recipe(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab_size=400, steps=3, batch_size=2,
               copy_steps=2, copy_batch_size=2)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sealshift")
    write_splits({"train": load_split("train")[:30], "ood_train": load_split("ood_train")[:6]}, out)
    (out / "PROVENANCE.json").write_text(json.dumps({"counts": {"train": {"tasks": 30}}}))
    return out


def test_training_examples_teach_answers_synthesis_and_demonstrations():
    tasks = load_split("train")[:60]
    pairs = training_examples(tasks, seed=0, synthesis_fraction=1.0, demo_fraction=1.0)
    synthesis = [r for _, r in pairs if r.startswith("Request:")]
    answers = [(m, r) for m, r in pairs if r.startswith("[")]
    assert all(len(m) == 4 for m, _ in answers)  # system, demonstration (user, assistant), the request
    # every task has a sibling (its demonstration above), so at fraction 1.0 each also gets a synthesis example
    assert len(answers) == len(synthesis) == len(tasks) and len(pairs) == 2 * len(tasks)
    assert all(m[-1]["content"].startswith("You write training data") for m, r in pairs if r.startswith("Request:"))
    assert training_examples(tasks, 0, 0.5, 0.1) == training_examples(tasks, 0, 0.5, 0.1)
    assert all(len(m) == 2 for m, _ in training_examples(tasks, 0, 0.0, 0.0))


def test_copy_examples_repeat_a_span_of_the_training_text(tokenizer):
    texts = [f"{m[-1]['content']} {r}" for m, r in training_examples(load_split("train")[:20], 0, 0.5, 0.1)]
    pairs = copy_examples(texts, tokenizer, count=50, seed=3)
    assert len(pairs) == 50 and pairs == copy_examples(texts, tokenizer, count=50, seed=3)
    assert pairs != copy_examples(texts, tokenizer, count=50, seed=4)
    for prompt, answer in pairs:
        assert prompt == answer and any(prompt in t for t in texts)
        assert 1 <= len(tokenizer.encode(prompt)) <= 48 + 2  # a re-encoded span may shift at its two edges
    assert len({p for p, _ in pairs}) > 40


def test_real_requests_are_repeated_and_templated_ones_are_not():
    tasks = load_split("train")
    real = {t.id for t in tasks if t.meta["subset"] == "real"}
    assert real and len(real) < 0.05 * len(tasks)
    more = recipe.weighted(tasks, 4)
    assert len(more) == len(tasks) + 3 * len(real)
    assert Counter(t.id for t in more) == Counter({t.id: 4 if t.id in real else 1 for t in tasks})
    assert recipe.weighted(tasks, 1) == tasks


@pytest.mark.slow
@pytest.mark.parametrize("camel", [False, True], ids=["qwen2-split", "camel-split"])
def test_recipe_is_deterministic(small_data, tmp_path, camel):
    small = dataclasses.replace(SMALL, camel_split=camel)
    a = train_base(tmp_path / "a", small, data=small_data)
    b = train_base(tmp_path / "b", small, data=small_data)
    assert a["final_loss"] == b["final_loss"] and a["recipe"]["camel_split"] is camel
    split = json.loads((tmp_path / "a" / "tokenizer.json").read_text())["pre_tokenizer"]["pretokenizers"][0]
    assert ("Lu" in json.dumps(split)) is camel
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert a["tasks"] == 30 and a["recipe"]["steps"] == 3
    info = json.loads((tmp_path / "a" / "train_info.json").read_text())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"))
    assert info["parameters"] == sum(p.numel() for p in model.parameters()) and info["recipe"]["hidden"] == 32
    assert info["recipe"]["copy_steps"] == 2 and info["copy_final_loss"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.subprocess)])  # 2: a spawned helper
def test_train_base_interrupted_in_its_task_stage_resumes_to_the_uninterrupted_weights(small_data, tmp_path,
                                                                                        workers):
    import os
    import signal

    from ttsi.errors import ConfigError

    longer = dataclasses.replace(SMALL, steps=6)
    whole = train_base(tmp_path / "a", longer, data=small_data, workers=workers)
    assert "resumed" not in whole and not any((tmp_path / "a" / f).exists() for f in recipe.STATES.values())

    def ctrl_c(step, loss):
        if step == longer.copy_steps + 1:  # the second task step
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_base(tmp_path / "b", longer, data=small_data, progress=ctrl_c, workers=workers)
    assert {f.name for f in (tmp_path / "b").glob("resume-*.pt")} == {"resume-copy.pt", "resume-task.pt"}
    with pytest.raises(ConfigError, match=r"saved with other settings \(workers\)"):
        train_base(tmp_path / "b", longer, data=small_data, resume=True, workers=3 - workers)
    with pytest.raises(ConfigError, match=r"saved with other settings \(recipe\)"):
        train_base(tmp_path / "b", dataclasses.replace(longer, lr=1e-3), data=small_data, resume=True,
                   workers=workers)
    info = train_base(tmp_path / "b", longer, data=small_data, resume=True, workers=workers)
    assert info["resumed"] == {"copy": 2, "task": 2} and info["final_loss"] == whole["final_loss"]
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list((tmp_path / "b").glob("resume-*"))
    with pytest.raises(ConfigError, match="holds no interrupted run to resume"):
        train_base(tmp_path / "b", longer, data=small_data, resume=True)


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_workers_train_the_recipe_to_the_one_process_weights_up_to_rounding(small_data, tmp_path):
    one = train_base(tmp_path / "a", SMALL, data=small_data)
    two = train_base(tmp_path / "b", SMALL, data=small_data, workers=2)
    assert (one["workers"], two["workers"]) == (1, 2)
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-4)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)


@pytest.mark.slow
def test_name_weight_changes_what_is_learned(small_data, tmp_path, monkeypatch):
    import dataclasses

    from ttsi.sealshift import train as loop

    seen = []
    train = loop.train_causal_lm

    def spy(*args, **kwargs):
        seen.append(kwargs.get("emphasis"))
        return train(*args, **kwargs)

    monkeypatch.setattr(loop, "train_causal_lm", spy)
    plain = train_base(tmp_path / "a", SMALL, data=small_data)
    heavy = train_base(tmp_path / "b", dataclasses.replace(SMALL, name_weight=4.0), data=small_data)
    assert seen[:2] == [None, None] and seen[2] is None and seen[3] == (recipe.call_names, 4.0)  # copy, task
    assert heavy["recipe"]["name_weight"] == 4.0 and plain["final_loss"] != heavy["final_loss"]


@pytest.mark.slow
def test_train_info_names_the_commit_the_run_started_from(small_data, tmp_path, monkeypatch):
    from ttsi import provenance
    from ttsi.sealshift import train as loop

    head = ["at-start"]
    train = loop.train_causal_lm

    def train_and_commit(*args, **kwargs):  # the checkout moves on while the model trains
        head[0] = "later"
        return train(*args, **kwargs)

    monkeypatch.setattr(loop, "train_causal_lm", train_and_commit)
    monkeypatch.setattr(provenance, "git_commit", lambda: head[0])
    assert train_base(tmp_path / "a", SMALL, data=small_data)["git_commit"] == "at-start"


@pytest.mark.slow
def test_teacher_continues_from_the_base(small_data, tmp_path):
    train_base(tmp_path / "base", SMALL, data=small_data)
    info = train_teacher(tmp_path / "base", tmp_path / "teacher", TeacherRecipe(steps=2, batch_size=2),
                         data=small_data)
    assert info["base"] == str(tmp_path / "base") and info["tasks"] == 36
    base, teacher = (load_file(tmp_path / d / "model.safetensors") for d in ("base", "teacher"))
    assert base.keys() == teacher.keys() and any(not (base[k] == teacher[k]).all() for k in base)
    from transformers import AutoTokenizer

    tok_base, tok_teacher = (AutoTokenizer.from_pretrained(str(tmp_path / d)) for d in ("base", "teacher"))
    assert tok_base.get_vocab() == tok_teacher.get_vocab()


def test_the_loss_covers_request_and_answer_but_never_the_tool_list(tokenizer):
    from ttsi.sealshift.recipe import supervised

    tasks = load_split("train")[:40]
    for messages, reply in training_examples(tasks, seed=0, synthesis_fraction=1.0, demo_fraction=0.5):
        context, target = supervised(tokenizer, messages, reply, request_loss=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert context + target == full + reply
        encode = tokenizer.encode
        assert encode(context) + encode(target) == encode(context + target)  # the split is a token boundary
        assert '"description": ' not in target and "You can call these functions" not in target
        assert target.endswith(reply)
        if messages[-1]["content"].startswith("You write training data"):  # synthesis: tools in the request
            assert target == reply
        else:
            assert messages[-1]["content"] in target
        assert supervised(tokenizer, messages, reply, request_loss=False) == (full, reply)


@pytest.mark.parametrize("words", ["names", "description"])
def test_renamed_examples_stay_consistent_and_teach_copying(words):
    import json as _json

    tasks = load_split("train")[:80]
    real_names = {t.name for task in tasks for t in task.tools}
    pairs = training_examples(tasks, seed=0, synthesis_fraction=1.0, demo_fraction=1.0, rename_fraction=1.0,
                              rename_words=words)
    made_up = []
    for messages, reply in pairs:
        shown = {_json.loads(line)["name"] for m in messages for line in m["content"].splitlines()
                 if line.startswith('{"name": ')}
        called = _json.loads(reply.split("Answer: ")[-1])[0]["name"]
        assert called in shown  # the call names a shown (renamed) tool
        made_up.append(called not in real_names)
        for m in messages:
            if m["role"] == "assistant":  # a demonstration calls a shown (renamed) tool too
                assert _json.loads(m["content"])[0]["name"] in shown
    assert sum(made_up) > 0.9 * len(made_up)  # a made-up name only rarely happens to be a real one
    plain = training_examples(tasks, seed=0, synthesis_fraction=1.0, demo_fraction=1.0, rename_fraction=0.0)
    assert all(_json.loads(r.split("Answer: ")[-1])[0]["name"] in real_names for _, r in plain)


def test_names_made_from_a_description_use_its_words_after_the_real_verb():
    import itertools
    import json as _json
    import re

    from ttsi.sealshift.recipe import _name_words

    tasks = load_split("train")[:80]
    pairs = training_examples(tasks, seed=0, synthesis_fraction=0.0, demo_fraction=0.0, rename_fraction=1.0,
                              rename_words="description")
    assert len(pairs) == len(tasks)
    changed = []
    for task in tasks:  # match each answer example to its task by the request
        messages, _ = next(p for p in pairs if p[0][-1]["content"] == task.query)
        tools = [_json.loads(line) for line in messages[0]["content"].splitlines() if line.startswith('{"name": ')]
        for real, shown in zip(task.tools, tools, strict=True):
            assert shown["description"] == real.description
            changed.append(shown["name"] != real.name)
            verb = _name_words(real.name)[0]
            assert shown["name"].startswith(verb)
            words = list(dict.fromkeys(re.findall(r"[a-z0-9]+", real.description.lower())))
            rest = shown["name"][len(verb):].lower()  # 1-3 of the description's words, in their order
            assert any("".join(c) == rest for k in (1, 2, 3) for c in itertools.combinations(words, k))
    assert sum(changed) > 0.8 * len(changed)  # it can hit the real name, but rarely
    with pytest.raises(ValueError, match="rename_words"):
        training_examples(tasks, seed=0, synthesis_fraction=0.0, demo_fraction=0.0, rename_words="random")


def test_train_base_set_changes_recipe_fields_and_names_bad_ones(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ttsi.cli import app

    seen = []

    def fake(out, recipe, **kwargs):
        seen.append(recipe)
        assert kwargs["workers"] == 2
        return {"parameters": 1, "seconds": 0, "final_loss": 0.0}

    monkeypatch.setattr(recipe, "train_base", fake)
    runner = CliRunner()
    args = ["train-base", "--out", str(tmp_path / "m"), "--set", "rename_fraction=0", "--set", "name_weight=4",
            "--set", "request_loss=false", "--set", "splits=train,ood_train", "--set", "rename_words=description",
            "--workers", "2"]
    assert runner.invoke(app, args).exit_code == 0
    assert seen == [Recipe(rename_fraction=0.0, name_weight=4.0, request_loss=False, splits=("train", "ood_train"),
                           rename_words="description")]
    for bad, message in [("nope=1", "FIELD one of splits, hidden"), ("steps", "expected FIELD=VALUE"),
                         ("steps=many", "steps must be an integer, like its default 3600"),
                         ("request_loss=maybe", "request_loss must be true or false")]:
        result = runner.invoke(app, ["train-base", "--out", str(tmp_path / "m"), "--set", bad])
        assert result.exit_code == 2 and message in result.stderr, (bad, result.output)
    result = runner.invoke(app, ["train-base", "--out", str(tmp_path / "m"), "--workers", "17"])
    assert result.exit_code == 2 and "--workers 17: each worker takes a share of every batch" in result.stderr
    assert len(seen) == 1


def test_train_base_never_writes_over_a_directory_unless_asked(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ttsi.cli import app

    trained = []
    monkeypatch.setattr(recipe, "train_base", lambda out, r, **k: trained.append(out) or
                        {"parameters": 1, "seconds": 0, "final_loss": 0.0})
    runner = CliRunner()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_text("an hour of training")
    result = runner.invoke(app, ["train-base", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "is not empty: choose another directory, or pass --overwrite" in result.stderr
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["train-base", "--out", str(tmp_path / "file"), "--overwrite"])
    assert result.exit_code == 2 and "is a file, not a directory" in result.stderr
    assert not trained
    (tmp_path / "empty").mkdir()
    for args in (["--out", str(tmp_path / "empty")], ["--out", str(tmp_path / "m"), "--overwrite"]):
        assert runner.invoke(app, ["train-base", *args]).exit_code == 0
    assert trained == [tmp_path / "empty", tmp_path / "m"]


def test_an_interrupted_train_base_says_how_to_resume_and_resumes(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ttsi.cli import app

    calls = []

    def interrupted(out, r, **kwargs):
        calls.append(kwargs["resume"])
        if not kwargs["resume"]:
            (out / "resume-task.pt").write_bytes(b"state")
            raise KeyboardInterrupt
        return {"parameters": 1, "seconds": 0, "final_loss": 0.0}

    monkeypatch.setattr(recipe, "train_base", interrupted)
    runner = CliRunner()
    out = tmp_path / "m"
    out.mkdir()
    result = runner.invoke(app, ["train-base", "--out", str(out)])
    assert result.exit_code == 130
    assert f"interrupted: the training state is saved in {out / 'resume-task.pt'}; run the same command with " \
           "--resume" in result.stderr.replace("\n", " ")
    result = runner.invoke(app, ["train-base", "--out", str(out)])
    assert result.exit_code == 2 and "pass --resume to continue the run interrupted there" in result.stderr
    assert runner.invoke(app, ["train-base", "--out", str(out), "--resume"]).exit_code == 0
    assert calls == [False, True]


@pytest.mark.parametrize(("setting", "message"), [
    ("hidden=-3", "hidden, layers, heads, kv_heads and intermediate must be at least 1"),
    ("heads=3", "hidden (128) must be heads (3) times an even head size"),
    ("kv_heads=3", "heads (4) must be a multiple of kv_heads (3)"),
    ("rename_fraction=2", "rename_fraction must be in [0, 1], got 2.0"),
    ("lr=0", "lr must be positive, got 0.0"),
    ("steps=0", "steps and batch_size must be at least 1, got 0 and 16"),
    ("vocab_size=259", "vocab_size must be above 259 (the 256 bytes and 3 special tokens)"),
    ("splits=train,test_ood", "splits must name some of train, ood_train (never a test split), got train,test_ood"),
    ("splits=", "got none"),
    ("rename_words=verbs", "rename_words must be 'names' or 'description', got 'verbs'"),
    ("copy_batch_size=0", "copy_batch_size at least 1"),
])
def test_a_recipe_that_cannot_train_is_refused_before_any_work(monkeypatch, tmp_path, setting, message):
    from typer.testing import CliRunner

    from ttsi.cli import app

    monkeypatch.setattr(recipe, "train_base", lambda *a, **k: pytest.fail("trained a recipe that cannot work"))
    result = CliRunner().invoke(app, ["train-base", "--out", str(tmp_path / "m"), "--set", setting])
    assert result.exit_code == 2 and result.stderr.startswith("error: recipe: ") and message in result.stderr, \
        result.output
    assert "Traceback" not in result.output


def test_the_library_checks_the_recipe_before_reading_data(tmp_path):
    from ttsi.errors import ConfigError

    assert len(tiny_models.SPECIAL_TOKENS) + 256 == recipe.MIN_VOCAB
    recipe.check_recipe(Recipe())  # the shipped recipe and the tests' small one are valid
    recipe.check_recipe(SMALL)
    with pytest.raises(ConfigError, match=r"recipe: heads \(4\) must be a multiple of kv_heads \(3\)"):
        train_base(tmp_path / "m", Recipe(kv_heads=3), data=tmp_path / "no-data")
    with pytest.raises(ConfigError, match=r"recipe: ood_share must be in \(0, 1\), got 1.0"):
        train_teacher(tmp_path / "base", tmp_path / "t", TeacherRecipe(ood_share=1.0), data=tmp_path / "no-data")
    assert not (tmp_path / "m").exists()

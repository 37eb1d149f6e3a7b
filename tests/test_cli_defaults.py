"""Every command-line option that sets a config field has that field's default: one source of truth, no drift."""

from __future__ import annotations

import dataclasses

import typer.main

from ttsi.cli import app
from ttsi.config import AgentConfig, GateConfig, LearnConfig, SynthesisConfig, TeacherConfig

CONFIGS = (AgentConfig, GateConfig, SynthesisConfig, TeacherConfig, LearnConfig)
# Options named after a config field by another name.
ALIASES = {"teacher_url": (TeacherConfig, "url"), "teacher_model": (TeacherConfig, "model"),
           "teacher_key_env": (TeacherConfig, "api_key_env")}
# Options that share a field's name but set something else, or default otherwise on purpose: (command, option).
NOT_THE_FIELD = {
    ("*", "model"): "the model to load, not TeacherConfig.model",
    ("serve", "timeout_s"): "the server's request deadline (ServeSettings), not the teacher's",
    ("serve", "api_key_env"): "where the server's own key is read from, not the teacher's",
    ("sft", "epochs"): "the supervised baseline's own default: 3 epochs over a whole labelled split",
    ("sft", "seed"): "train_sft's seed; sft builds no AgentConfig",
}


def _fields() -> dict[str, tuple[type, str]]:
    """Option name -> (config class, field) for every field with a plain default (sub-configs left out)."""
    out: dict[str, tuple[type, str]] = dict(ALIASES)
    for config in CONFIGS:
        for f in dataclasses.fields(config):
            if f.default is not dataclasses.MISSING:
                out.setdefault(f.name, (config, f.name))
    return out


def _options():
    group = typer.main.get_command(app)
    for command_name, command in sorted(group.commands.items()):
        for param in command.params:
            yield command_name, param


def test_every_option_that_sets_a_config_field_has_its_default():
    fields, checked, wrong = _fields(), set(), []
    for command, param in _options():
        if param.name not in fields or {(command, param.name), ("*", param.name)} & NOT_THE_FIELD.keys():
            continue
        config, name = fields[param.name]
        expected = getattr(config, name)
        actual = param.default
        if command == "eval" and param.name == "tau":  # text, as it may be a comma-separated sweep
            actual = float(actual)
        checked.add(param.name)
        if actual != expected or type(actual) is not type(expected):
            wrong.append(f"ttsi {command} --{param.name}: {param.default!r}, but {config.__name__}.{name} = "
                         f"{expected!r}")
    assert not wrong, "; ".join(wrong)
    # the walk sees the options it is meant to check (a rename would make it pass vacuously)
    assert checked >= {"tau", "k", "epochs", "lr", "max_new_tokens", "seed", "measure", "candidates", "normalize",
                       "method", "icl_source", "samples", "batch_size", "teacher_url", "teacher_model",
                       "teacher_key_env"}


def test_the_exceptions_still_exist():
    """An exception left behind after its option went away would hide nothing, but mislead."""
    options = {(command, param.name) for command, param in _options()}
    for command, name in NOT_THE_FIELD:
        assert any(o == name and command in ("*", c) for c, o in options), (command, name)

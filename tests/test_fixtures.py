"""The shipped toy model (tests/fixtures/toy-model) is what scripts/build_test_fixtures.py builds."""

import json

import pytest
import torch
from safetensors.torch import load_file

from .conftest import TOY_DIR, load_script


def _info() -> dict:
    return json.loads((TOY_DIR / "fixture_info.json").read_text(encoding="utf-8"))


def test_the_shipped_toy_model_records_the_scripts_recipe():
    script = load_script("build_test_fixtures")
    assert script.TOY_DIR == TOY_DIR
    assert _info()["args"] == script.TOY_RECIPE and _info()["torch_threads"] == script.THREADS


def _json_without_version(path) -> dict:
    """A saved config, less the writer's version (a transformers upgrade alone changes it, not the model)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("transformers_version", None)
    return data


@pytest.mark.slow
def test_the_script_rebuilds_the_shipped_toy_model_bit_for_bit(tmp_path):
    out = load_script("build_test_fixtures").build_toy(tmp_path / "toy")
    info = _info()
    hint = (f"the shipped toy model was built with torch {info['torch']}, transformers {info['transformers']}, "
            f"tokenizers {info['tokenizers']}; if the training code or those versions changed on purpose, rebuild "
            "it with `python scripts/build_test_fixtures.py` and ship it")
    shipped, rebuilt = load_file(TOY_DIR / "model.safetensors"), load_file(out / "model.safetensors")
    assert shipped.keys() == rebuilt.keys(), hint
    assert [name for name in shipped if not torch.equal(shipped[name], rebuilt[name])] == [], hint
    files = sorted(p.name for p in TOY_DIR.iterdir() if p.name != "README.md")
    assert sorted(p.name for p in out.iterdir()) == files
    for name in files:
        if name.endswith(".json") and name != "fixture_info.json":
            assert _json_without_version(out / name) == _json_without_version(TOY_DIR / name), f"{name}: {hint}"
        elif not name.endswith(".safetensors") and name != "fixture_info.json":
            assert (out / name).read_bytes() == (TOY_DIR / name).read_bytes(), f"{name}: {hint}"

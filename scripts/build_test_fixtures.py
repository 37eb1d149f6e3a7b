"""Build the toy model the tests load (tests/fixtures/toy-model): `python scripts/build_test_fixtures.py [--out DIR]`.

The tests used to train it in a session fixture: minutes before the first test, and weights that changed with the
machine's torch thread count. Built here once, single-threaded and seeded, and shipped, it is the same everywhere;
tests/test_fixtures.py rebuilds it and compares.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers
import torch
import transformers

from ttsi.toy import build_toy_model

TOY_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "toy-model"
# build_toy_model's arguments; changing them means rebuilding and shipping the fixture again
TOY_RECIPE: dict[str, Any] = {"steps": 500, "lr": 1e-2, "seed": 0}
THREADS = 1  # intra-op threads: a different count sums in another order and gives other weights


def build_toy(out: str | Path = TOY_DIR) -> Path:
    """Train the toy model with TOY_RECIPE into `out` and record how in `out`/fixture_info.json."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        out = build_toy_model(out, **TOY_RECIPE)
    finally:
        torch.set_num_threads(threads)  # the tests call this in-process
    info = {"builder": "ttsi.toy.build_toy_model", "args": TOY_RECIPE, "torch_threads": THREADS,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "date": datetime.date.today().isoformat()}
    (out / "fixture_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(TOY_DIR), help="output directory (default: %(default)s)")
    args = parser.parse_args()
    print(build_toy(args.out))

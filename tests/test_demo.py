"""The interim demo: it runs the loop, writes per-item records, and every printed figure comes from them."""

from __future__ import annotations

import json

from rich.console import Console

from ttsi.demo import run_demo, summarize


def test_quick_demo_writes_records_and_a_summary_derived_from_them(toy_dir, tmp_path):
    console = Console(record=True, width=100)
    records = run_demo(model_dir=toy_dir, quick=True, out_dir=tmp_path, console=console)
    on_disk = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert on_disk == records and len(records) == 3 * 12  # 3 methods x (6 seen + 6 unseen)
    assert {r["method"] for r in records} == {"base", "tt-si", "oracle"}
    summary = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert summary == summarize(on_disk)
    base_seen = next(r for r in summary if r["method"] == "base" and r["split"] == "seen")
    expected = sum(r["correct"] for r in on_disk if r["method"] == "base" and r["split"] == "seen") / 6
    assert base_seen["accuracy"] == expected
    text = console.export_text()
    assert "Toy demo" in text and f"{expected:.1%}" in text and "results.jsonl" in text


def test_summarize_counts_by_hand():
    def rec(method, correct, adapted, uncertain, s=0.0):
        return {"method": method, "split": "x", "correct": correct, "function_correct": True, "adapted": adapted,
                "uncertainty": {"uncertain": uncertain}, "synthetic": [{}] if adapted else [],
                "timings": {"synthesize_s": s, "train_s": s, "reset_s": s}}

    rows = summarize([rec("tt-si", True, True, True, 1.0), rec("tt-si", False, False, False),
                      rec("tt-si", True, True, True, 2.0), rec("tt-si", False, False, True)])
    assert rows == [{"method": "tt-si", "split": "x", "n": 4, "accuracy": 0.5, "function_accuracy": 1.0,
                     "flagged": 3, "adapted": 2, "synthetic": 2, "extra_s_per_adapted": 4.5}]

"""Speed benchmarks of the TT-SI machinery (run with `python perf/run.py`; see perf/README.md)."""

"""Speed benchmarks of the TT-SI machinery (run with `python benchmarks/run.py`; see benchmarks/README.md)."""

"""Evaluation: run the agent over benchmarks, score outputs made elsewhere, train the SFT baseline, report."""

"""SealShift's side of the package: deriving the benchmark from Seal-Tools (`derive`) and training the embedded
model on it: the recipe (`recipe`, `ttsi train-base`), its training loop (`train`) and the data-parallel helpers
that loop uses (`data_parallel`). The benchmark itself (shipped splits, loader, scorer) is `ttsi.benchmarks.sealshift`.
"""

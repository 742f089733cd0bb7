"""Benchmarks of the library: ``speed`` (``vlseg bench``: time and memory of the Segmenter on a
generated case) and ``robustness`` (the seeded shift-family test set and its scoring). The scripts
in the top-level ``bench/`` folder drive them and the other measurements; results go to
``bench/results/``."""

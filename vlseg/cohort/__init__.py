"""Cohorts: one query over many cases with one model load per process, resumable, on one
machine or split over processes/GPUs/nodes with ``accelerate launch``.

``cases.py`` finds the cases, ``runner.py`` answers them, ``tables.py`` keeps the state on disk
and writes ``measurements.csv`` / ``failures.csv``, ``cli.py`` is ``vlseg segment --cases``.
"""
from vlseg.cohort.cases import CaseRef, find_cases, shard
from vlseg.cohort.tables import measurement_rows, write_tables

__all__ = ["CaseRef", "find_cases", "shard", "measurement_rows", "write_tables"]

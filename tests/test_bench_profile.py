"""`vlseg bench --profile`: the stage table resolves, recording times stages and restores the
library, and the table prints every stage (no timing is asserted: speed is the benchmark's job)."""
from __future__ import annotations

import time

import pytest

from vlseg.benchmarks import stages
from vlseg.benchmarks.profile import format_profile


@pytest.mark.parametrize("name", stages.STAGES)
def test_every_stage_names_a_function_that_exists(name):
    for module, attribute in stages.STAGE_FUNCTIONS[name]:
        assert callable(stages.resolve(module, attribute)[2])


def test_recording_times_own_seconds_and_restores_the_library(monkeypatch):
    import vlseg.model.preprocess as pre

    before = {(m, a): stages.resolve(m, a)[2] for targets in stages.STAGE_FUNCTIONS.values()
              for m, a in targets}

    def n4(*args, **kwargs):
        time.sleep(0.05)

    def normalise(*args, **kwargs):  # the n4 stage nested in the normalise stage
        pre.correct_bias_field()
        time.sleep(0.02)

    monkeypatch.setattr(pre, "correct_bias_field", n4)
    monkeypatch.setattr(pre, "normalize_volume", normalise)
    with stages.recording() as times:
        pre.normalize_volume()
    assert times["n4"] >= 0.05
    assert 0.02 <= times["normalise"] < 0.05  # its own time: the nested n4 is not counted twice
    assert pre.correct_bias_field is n4 and pre.normalize_volume is normalise
    monkeypatch.undo()
    after = {(m, a): stages.resolve(m, a)[2] for targets in stages.STAGE_FUNCTIONS.values()
             for m, a in targets}
    assert after == before


def test_profile_table_has_a_row_per_stage_and_a_column_per_case():
    stage_s = {"read": 0.4, "n4": 0.3, "encode": 1.0, "other": 0.01, "total": 1.71}
    case = {"first_answer": stage_s, "follow_up": {"parse": 0.01, "total": 0.05}, "follow_up_max_s": 0.2}
    result = {"runs": 3, "device": "cpu", "threads": 2, "machine": "x86_64, 2 cores", "model_load_s": 0.4,
              "peak_rss_mb": 900.0, "cases": {"default": case, "thick": case}}
    table = format_profile(result)
    for row in ("read", "n4", "encode", "parse", "total", "f-up slowest"):
        assert any(line.startswith(row) for line in table.splitlines())
    assert "default" in table and "thick" in table

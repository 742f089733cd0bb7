"""MONAI's inferer is imported once, in the background, and waited for by its first user."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, threading
from vlseg.model import monai_inferer as m
assert "monai" not in sys.modules
m.preload_inferer(); m.preload_inferer()
imports = [t for t in threading.enumerate() if t.name == "vlseg-import-monai"]
assert len(imports) == 1 and not imports[0].daemon
f = m.sliding_window()
assert f.__name__ == "sliding_window_inference" and not imports[0].is_alive()
m.preload_inferer()  # imported: nothing more starts
assert [t for t in threading.enumerate() if t.name == "vlseg-import-monai"] == []
print("ok")
"""


def test_one_background_import_waited_for_by_its_first_user():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_a_2mm_case_never_imports_monai(phantom_case_2mm):
    """The bundled model's refinement stage runs only on scans finer than its first stage's 2 mm
    grid: answering a 2 mm case imports no MONAI (3-4 s and ~380 MB saved per cohort process)."""
    script = f"""
import sys
from vlseg.segmenter import Segmenter
seg = Segmenter.from_pretrained()
assert seg.predictor.refines and "monai" not in sys.modules
seg.set_case({str(phantom_case_2mm)!r})
ans = seg.ask("segment the enhancing tumor")
assert "monai" not in sys.modules, "a 2 mm case imported MONAI"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")

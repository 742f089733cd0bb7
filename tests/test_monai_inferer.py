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

"""Thin entry point for the chat app: `python serve/app.py [vlseg serve options]`.

Same as `vlseg serve` (and `make demo`); all logic lives in `vlseg.app`.
"""
from __future__ import annotations

import sys

from vlseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))

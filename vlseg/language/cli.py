"""`vlseg parse "…" ["…" …]`: one JSON parse per query, one per line; `-` reads stdin lines.

Queries are independent unless ``--chat`` is given: then each is parsed with the last answered
one as context, so `vlseg parse --chat "segment the edema" "how big is it?"` resolves "it".
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Iterator

from vlseg.errors import InputError


def _queries(items: list[str]) -> Iterator[str]:
    for item in items:
        if item == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line
        else:
            yield item


def run(args: argparse.Namespace) -> int:
    from vlseg.language.parse import QueryParser

    encoder = None
    if getattr(args, "model", None):
        from vlseg.model import load_model

        encoder = load_model(args.model).text_encoder
    parser = QueryParser(encoder=encoder)
    previous = None
    failed = 0
    for n, query in enumerate(_queries(list(args.queries)), start=1):
        try:
            parse = parser.parse(query, previous=previous)
        except InputError as e:
            # One bad line does not stop the rest; report it on stderr and exit 2 at the end.
            print(f"vlseg parse: error: query {n}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(parse.to_json(), ensure_ascii=False), flush=True)
        if getattr(args, "chat", False) and not parse.refused and parse.intent != "help":
            previous = parse
    return 2 if failed else 0

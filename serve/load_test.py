"""Load test for the chat app's `/ask` API: N concurrent gradio_client sessions on localhost.

    python serve/load_test.py --url http://127.0.0.1:7860 --n 16 --case path/to/case_folder

Each session uploads the case's sequence files and asks one question. Reports p50/p95 latency of
the answered requests, server errors, and "queue full" refusals, then checks that the app still
answers. Bounded: at most --max-n sessions, localhost URLs only, and a wall-clock --timeout.
Exit status 0 when there were no server errors and the final check answered.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

MAX_N = 64
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class LoadReport:
    n: int
    ok: int = 0
    queue_full: int = 0
    errors: int = 0  # anything else: server errors, timeouts, broken connections
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    still_answering: bool | None = None

    def percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        xs = sorted(self.latencies_s)
        k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
        return xs[k]

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("latencies_s")
        d["p50_s"] = None if self.percentile(50) is None else round(self.percentile(50), 3)
        d["p95_s"] = None if self.percentile(95) is None else round(self.percentile(95), 3)
        d["wall_s"] = round(self.wall_s, 2)
        return d


def check_local(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in {h.strip("[]") for h in LOCAL_HOSTS}:
        raise SystemExit(f"load_test: refusing non-local URL host {host!r}; run it against localhost only")


def case_files(case: Path) -> list[Path]:
    """The sequence files of a case folder (any BraTS-style names), label maps left out."""
    from vlseg.app.uploads import sequence_from_name

    files = sorted(p for p in Path(case).iterdir()
                   if sequence_from_name(p.name) not in (None, "seg"))
    if not files:
        raise SystemExit(f"load_test: no sequence files in {case}")
    return files


def run_load(url: str, files: list[Path], *, n: int, query: str = "segment the enhancing tumor",
             timeout_s: float = 300.0, stagger_s: float = 0.0) -> LoadReport:
    """Start ``n`` sessions at once (each its own Client), one ``/ask`` each; then one more check."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    if not 1 <= n <= MAX_N:
        raise ValueError(f"n must be in 1..{MAX_N}")
    check_local(url)
    report = LoadReport(n=n)
    lock = threading.Lock()
    deadline = time.monotonic() + timeout_s
    start = threading.Barrier(n)

    def one(i: int) -> None:
        kind = None
        t0 = None
        try:
            client = Client(url, verbose=False, download_files=False)
            start.wait(timeout=max(1.0, deadline - time.monotonic()))
            time.sleep(i * stagger_s)
            t0 = time.perf_counter()
            job = client.submit([handle_file(str(f)) for f in files], query, api_name="/ask")
            answer, _ = job.result(timeout=max(1.0, deadline - time.monotonic()))
            if not isinstance(answer, dict) or "text" not in answer:
                kind = "bad_answer"
        except QueueError:
            kind = "queue_full"
        except Exception as e:  # noqa: BLE001 - counted and reported by type
            kind = "queue_full" if "queue is full" in str(e).lower() else type(e).__name__
        with lock:
            if kind is None:
                report.ok += 1
                report.latencies_s.append(time.perf_counter() - (t0 or time.perf_counter()))
            elif kind == "queue_full":
                report.queue_full += 1
            else:
                report.errors += 1
                report.error_kinds[kind] = report.error_kinds.get(kind, 0) + 1

    t_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    report.wall_s = time.perf_counter() - t_start
    report.still_answering = still_answers(url, files, query=query, timeout_s=60.0)
    return report


def still_answers(url: str, files: list[Path], *, query: str, timeout_s: float) -> bool:
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False, download_files=False)
        answer, _ = client.submit([handle_file(str(f)) for f in files], query,
                                  api_name="/ask").result(timeout=timeout_s)
        return isinstance(answer, dict) and "text" in answer
    except Exception:  # noqa: BLE001
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:7860/")
    p.add_argument("--n", type=int, default=16, help=f"concurrent sessions (1..{MAX_N})")
    p.add_argument("--case", required=True, help="case folder whose sequence files are uploaded")
    p.add_argument("--query", default="segment the enhancing tumor")
    p.add_argument("--timeout", type=float, default=600.0, help="wall-clock limit in seconds")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    a = p.parse_args(argv)
    check_local(a.url)
    report = run_load(a.url, case_files(Path(a.case)), n=a.n, query=a.query, timeout_s=a.timeout)
    s = report.summary()
    print(json.dumps(s, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(s, indent=2) + "\n")
    return 0 if report.errors == 0 and report.still_answering else 1


if __name__ == "__main__":
    sys.exit(main())

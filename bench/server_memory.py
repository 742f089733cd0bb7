"""Server memory over many answered sessions (issue 26 point 5: flat within +-10 %).

Drives the app's session store (``vlseg.app.sessions.SessionStore``: a new chat session per
round, a case loaded, a question answered with the UI's pictures, the slice viewer drawn) and the
MCP tools (``vlseg.mcp_server.CaseTools``: ``load_case`` then ``ask``) in process, the way the
servers call them, over ``--sessions`` rounds that cycle through ``--cases`` generated phantoms.
Prints this process's resident memory (RSS) every ``--every`` sessions, then once more after an
idle pause (the servers trim the heap when idle). A benchmark, not a timed test: the memory shape
does not depend on the weights, so a ``tiny`` model with random weights is enough.

    OMP_NUM_THREADS=1 python bench/server_memory.py [--sessions 200] [--cases 5] [--spacing 3]
        [--server app|mcp|both] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = ("segment the whole tumor",)


def rss_mb() -> float:
    """This process's resident set size in MB (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def make_cases(root: Path, n: int, spacing: float) -> list[Path]:
    from vlseg.synth import write_case

    return [write_case(root / "cases", seed=seed, spacing_mm=spacing) for seed in range(n)]


def make_segmenter(root: Path):
    import torch

    from vlseg.model import build_model
    from vlseg.model.checkpoint import save_checkpoint
    from vlseg.segmenter import Segmenter

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("tiny"), root / "tiny-random", {"note": "random weights (benchmark)"})
    return Segmenter.from_pretrained(str(ckpt))


def run_app(seg, cases: list[Path], root: Path, args: argparse.Namespace) -> list[dict]:
    from vlseg.app.sessions import AskRequest, CaseRequest, SessionStore

    store = SessionStore(base=seg, output_dir=root / "app", max_cached=3, max_sessions=256)
    rows = [{"sessions": 0, "rss_mb": round(rss_mb(), 1)}]
    for i in range(1, args.sessions + 1):
        sid = store.new_session()
        store.set_case(CaseRequest(session_id=sid, source=cases[i % len(cases)], label=None))
        for q in QUESTIONS:
            store.ask(AskRequest(session_id=sid, query=q))
        store.viewer_payload(sid)
        if i % args.every == 0:
            rows.append(report("app", i, rows[1]["rss_mb"] if len(rows) > 1 else None))
    rows.append(idle("app", args.idle_s, store.idle))
    return rows


def run_mcp(seg, cases: list[Path], root: Path, args: argparse.Namespace) -> list[dict]:
    from vlseg.mcp_server import CaseTools

    tools = CaseTools(segmenter=seg.fork(), out_root=root / "mcp")
    rows = [{"sessions": 0, "rss_mb": round(rss_mb(), 1)}]
    for i in range(1, args.sessions + 1):
        tools.load_case(str(cases[i % len(cases)]))
        tools.idle()  # as both MCP transports do after each tool call
        for q in QUESTIONS:
            tools.ask(q)
            tools.idle()
        if i % args.every == 0:
            rows.append(report("mcp", i, rows[1]["rss_mb"] if len(rows) > 1 else None))
    rows.append(idle("mcp", args.idle_s, tools.idle))
    return rows


def report(server: str, i: int, first: float | None) -> dict:
    now = rss_mb()
    growth = "" if first is None else f"  ({100 * (now - first) / first:+.1f} % since session 20)"
    print(f"{server}: {i:4d} sessions  RSS {now:7.1f} MB{growth}", flush=True)
    return {"sessions": i, "rss_mb": round(now, 1)}


def idle(server: str, seconds: float, on_idle) -> dict:
    time.sleep(seconds)
    on_idle()
    now = rss_mb()
    print(f"{server}: idle {seconds:.0f} s  RSS {now:7.1f} MB", flush=True)
    return {"sessions": "idle", "rss_mb": round(now, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--cases", type=int, default=5, help="phantoms cycled through (default 5)")
    p.add_argument("--spacing", type=float, default=3.0, help="phantom spacing in mm (default 3)")
    p.add_argument("--every", type=int, default=20, help="print RSS every N sessions")
    p.add_argument("--idle-s", type=float, default=2.0, help="idle pause before the last figure")
    p.add_argument("--server", choices=("app", "mcp", "both"), default="both")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-trim", action="store_true",
                   help="never give freed heap back to the OS (the servers before issue 26)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.sessions < 1 or args.every < 1 or args.cases < 1:
        print("server_memory: error: --sessions, --every and --cases must be >= 1", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    if args.no_trim:  # the comparison: the servers as they were, keeping every freed page
        import vlseg.app.sessions
        import vlseg.mcp_server

        vlseg.app.sessions.release_memory = vlseg.mcp_server.release_memory = gc.collect
    result: dict = {"machine": platform.platform(), "python": platform.python_version(),
                    "sessions": args.sessions, "cases": args.cases, "spacing_mm": args.spacing,
                    "trim": not args.no_trim}
    with tempfile.TemporaryDirectory(prefix="vlseg-mem-") as tmp:
        root = Path(tmp)
        cases = make_cases(root, args.cases, args.spacing)
        seg = make_segmenter(root)
        print(f"start: RSS {rss_mb():.1f} MB ({args.cases} phantoms at {args.spacing} mm, tiny random model)")
        for server, run in (("app", run_app), ("mcp", run_mcp)):
            if args.server in (server, "both"):
                result[server] = run(seg, cases, root, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Screenshots of the chat app for the README: a sample case and two questions, in headless Chromium.

    python serve/screenshot.py --out docs/screenshot.png --narrow-out docs/screenshot-narrow.png \
        [--model CKPT] [--samples DIR]

Starts the app on a free localhost port with the given (default: bundled) model, loads the first
sample case, asks the questions back to back (the second waits in the queue) and saves what a
1400×900 screen shows without scrolling; ``--narrow-out`` adds a full-page shot 400 px wide.
Needs Debian's /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 300_000
DONE = ("() => { const t = document.querySelector('#chat').innerText;"
        " return !t.includes('Answering') && !t.includes('Queued'); }")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask_all(page, sample: str, queries: list[str]) -> None:
    page.locator("#load-sample").wait_for(timeout=WAIT_MS)
    page.get_by_label(sample).check(timeout=WAIT_MS)
    page.click("#load-sample")
    page.locator("#chat").get_by_text("Loaded").wait_for(timeout=WAIT_MS)
    page.locator("#viewer canvas").first.wait_for(timeout=WAIT_MS)
    for q in queries:
        page.fill("#query textarea", q)
        page.press("#query textarea", "Enter")
        page.wait_for_timeout(500)
    page.wait_for_function(DONE, timeout=WAIT_MS)
    page.locator("#chat img").last.wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(1500)  # pictures and viewer tiles finish drawing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="1400×900 screenshot (PNG)")
    p.add_argument("--narrow-out", default=None, help="also a 400 px wide full-page screenshot")
    p.add_argument("--model", default=None)
    p.add_argument("--samples", default=str(Path("~/.cache/vlseg/samples").expanduser()))
    p.add_argument("--query", action="append", default=None,
                   help="question(s) to ask (default: the enhancing tumor, then the edema)")
    a = p.parse_args(argv)
    queries = a.query or ["segment the enhancing tumor", "segment the necrotic core and the edema"]

    from playwright.sync_api import sync_playwright

    from vlseg.app.security import AppConfig
    from vlseg.app.server import create_app, gradio_environment

    with tempfile.TemporaryDirectory() as tmp:
        cfg = AppConfig(output_root=Path(tmp) / "out", samples_dir=a.samples, port=_free_port(),
                        model=a.model)
        os.environ.update(gradio_environment(cfg))
        app = create_app(cfg)
        app.launch()
        try:
            print("waiting for sample cases ...", file=sys.stderr)
            app.samples.wait()
            sample = app.samples.names[0]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(app.url)
                _ask_all(page, sample, queries)
                page.screenshot(path=a.out)
                if a.narrow_out:
                    narrow = browser.new_page(viewport={"width": 400, "height": 860})
                    narrow.goto(app.url)
                    _ask_all(narrow, sample, queries[:1])
                    narrow.screenshot(path=a.narrow_out, full_page=True)
                browser.close()
        finally:
            app.close()
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Screenshot of the chat app for the README: sample case + one question, in headless Chromium.

    python serve/screenshot.py --out docs/screenshot.png [--model CKPT] [--samples DIR]

Starts the app on a free localhost port with the given (default: bundled) model, loads the first
sample case, asks the question and saves a full-page PNG. Needs Debian's /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--samples", default=str(Path("~/.cache/vlseg/samples").expanduser()))
    p.add_argument("--query", default="segment the enhancing tumor")
    a = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from vlseg.app.security import AppConfig
    from vlseg.app.server import create_app

    with tempfile.TemporaryDirectory() as tmp:
        cfg = AppConfig(output_root=Path(tmp) / "out", samples_dir=a.samples, port=_free_port(),
                        model=a.model)
        app = create_app(cfg)
        app.launch()
        try:
            print("waiting for sample cases ...", file=sys.stderr)
            app.samples.wait()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.goto(app.url)
                page.get_by_label(app.samples.names[0]).check(timeout=60_000)
                page.click("#load-sample")
                page.locator("#chat").get_by_text("Loaded").wait_for(timeout=300_000)
                n = page.locator("#chat .message-row").count()
                page.fill("#query textarea", a.query)
                page.click("#ask")
                page.locator("#chat .message-row").nth(n + 1).wait_for(timeout=300_000)
                page.locator("#overlay img").wait_for(timeout=60_000)
                page.wait_for_timeout(1000)
                page.screenshot(path=a.out, full_page=True)
                browser.close()
        finally:
            app.close()
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The chat app in a real headless Chromium (Playwright + Debian's chromium), with a fast stand-in
model (``app_fakes.FakeSegmenter``, 1 s per question) so the browser steps, not the model, are
tested: questions queued in order, refusals keep the results, results on screen at 1400×900 and
usable at 400 px, the three-plane viewer, downloads named by case, examples that ask, the upload
box clearing. The real tiny model in the browser is ``test_app_e2e.py``.

Set ``VLSEG_SCREENSHOT_DIR`` to keep the screenshots (``docs/screenshot.png`` is made by
``serve/screenshot.py`` with the bundled model).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from app_fakes import (FakeSegmenter, copy_case_writer, fake_fork, free_port, point_gradio_at, restore_env,
                       save_gradio_env)

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
T = 60_000  # ms: generous waits for a busy 2-core machine

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium not installed at /usr/bin/chromium (.ci/run installs it)")


@pytest.fixture(scope="module")
def fake_app(tmp_path_factory, phantom_case_2mm):
    from vlseg.app.security import AppConfig
    from vlseg.app.server import create_app

    saved = save_gradio_env()
    tmp = tmp_path_factory.mktemp("browser")
    cfg = AppConfig(output_root=tmp / "out", samples_dir=tmp / "samples", port=free_port(),
                    sample_seeds=(3,), sample_spacing_mm=2.0)
    point_gradio_at(cfg)
    app = create_app(cfg, segmenter=FakeSegmenter(delay_s=1.0), fork=fake_fork,
                     sample_writer=copy_case_writer(phantom_case_2mm))
    app.launch()
    assert app.samples.wait(120)
    # An "uploaded" case: the same phantom under a BraTS-style name (the case id comes from it).
    up = tmp / "upload"
    up.mkdir()
    for f in sorted(phantom_case_2mm.glob("*-t*.nii.gz")):
        seq = f.name.split("-")[-1]
        shutil.copyfile(f, up / f"BraTS-GLI-00042-000-{seq}")
    yield app, up
    app.close()
    restore_env(saved)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _shot(page, tmp_path: Path, name: str, full_page: bool = False) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=full_page)
    keep = os.environ.get("VLSEG_SCREENSHOT_DIR")
    if keep:
        shutil.copyfile(path, Path(keep) / name)
    return path


def _upload(page, files: list[str], shown: str) -> None:
    """Upload through the file input and wait until the box lists ``shown``. Once, in a full
    CI run on a loaded 2-core machine, the browser never reported a finished upload within 60 s
    (not reproducible alone); the upload is then offered a second time before failing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(2):
        page.set_input_files("#upload input[type=file]", files)
        try:
            page.locator("#upload").get_by_text(shown).wait_for(timeout=T)
            return
        except PlaywrightTimeout:
            if attempt:
                raise


def _bubbles(page) -> list[str]:
    return [t.strip() for t in page.locator("#chat .message-row").all_inner_texts()]


def _viewer(page) -> dict:
    return page.evaluate("""() => { const e = document.querySelector('#viewer');
        const s = e && [e, ...e.querySelectorAll('*')].map(n => n.vlsegViewer).find(Boolean);
        return s ? {vox: s.vox.slice(), opacity: s.opacity, off: s.off, active: s.active,
                    shape: s.data && s.data.shape,
                    seq: s.data && s.data.seq, concepts: s.data ? s.data.concepts.map(c => c.code) : [],
                    colors: s.data ? s.data.concepts.map(c => c.color) : [],
                    planes: s.data ? s.data.planes.map(p => [p.name, p.marks, p.bg]) : []} : null; }""")


def _in_view(box, width: int, height: int) -> bool:
    return (box is not None and box["y"] >= 0 and box["x"] >= 0
            and box["y"] + box["height"] <= height + 1 and box["x"] + box["width"] <= width + 1)


def _overlap(a, b) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


@needs_chromium
def test_browser_chat_viewer_downloads(fake_app, browser, tmp_path):
    from vlseg import vocab

    app, upload_dir = fake_app
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app.url)
    page.locator("#load-sample").wait_for(timeout=T)
    for el in ("#load-sample", "#case-info", "#query", "#chat"):  # ids the tests rely on
        assert page.locator(el).count() == 1, el

    # -- 7: an uploaded case gets its id from the file names; the upload box clears after a load.
    _upload(page, [str(p) for p in sorted(upload_dir.iterdir())], "BraTS-GLI-00042-000-t1c.nii.gz")
    page.click("#load-upload")
    page.locator("#chat").get_by_text("Loaded BraTS-GLI-00042-000").wait_for(timeout=T)
    page.wait_for_function("() => !document.querySelector('#upload').innerText.includes('t1c.nii.gz')",
                           timeout=T)
    assert "BraTS-GLI-00042-000" in page.locator("#case-info").inner_text()
    page.locator("#viewer canvas").first.wait_for(timeout=T)

    # -- 1: two questions back to back are both shown at once, queued, answered in order.
    n0 = len(_bubbles(page))
    page.fill("#query textarea", "segment the enhancing tumor")
    page.press("#query textarea", "Enter")
    page.wait_for_timeout(500)
    # The question is also an example in the "Loaded ..." message: wait for one more copy of it.
    copies = """text => [...document.querySelectorAll('#chat *')].filter(
                    e => e.children.length === 0 && e.textContent.trim() === text).length"""
    shown = page.evaluate(copies, "how big is the edema?")
    page.fill("#query textarea", "how big is the edema?")
    page.press("#query textarea", "Enter")
    page.wait_for_function(f"([text, n]) => ({copies})(text) > n", arg=["how big is the edema?", shown],
                           timeout=5_000)
    assert page.locator("#chat").get_by_text("segment the enhancing tumor").count() >= 1
    page.locator("#chat").get_by_text("peritumoral edema of case").wait_for(timeout=T)
    page.locator("#chat").get_by_text("enhancing tumor of case").wait_for(timeout=T)
    page.wait_for_function("() => !document.querySelector('#chat').innerText.includes('Queued')"
                           " && !document.querySelector('#chat').innerText.includes('Answering')", timeout=T)
    rows = _bubbles(page)[n0:]
    assert rows[0] == "segment the enhancing tumor" and rows[1].startswith("enhancing tumor of case")
    assert rows[-2] == "how big is the edema?" and rows[-1].startswith("peritumoral edema of case"), rows
    assert page.locator("#query textarea").input_value() == ""

    # -- 3: the overlay (legend + volumes) of the last answer and the viewer are on screen.
    page.wait_for_timeout(500)
    pic = page.locator("#chat img").last
    pic.wait_for(timeout=T)
    assert _in_view(pic.bounding_box(), 1400, 900)
    for plane in ("axial", "coronal", "sagittal"):
        assert _in_view(page.locator(f'#viewer canvas[data-plane="{plane}"]').bounding_box(), 1400, 900)
    boxes = {k: page.locator(k).bounding_box() for k in ("#chat", "#query", "#ask", "#viewer", "#case-col")}
    for a, b in (("#chat", "#query"), ("#chat", "#ask"), ("#query", "#ask"), ("#chat", "#viewer"),
                 ("#case-col", "#chat")):
        assert not _overlap(boxes[a], boxes[b]), (a, b)
    _shot(page, tmp_path, "screenshot.png")

    # -- 8 (issue 22): each answer's bubble keeps its own table and downloads; the first
    # answer's enhancing-tumor mask is still there after the edema question.
    first = page.locator("#chat .message-row").filter(has_text="enhancing tumor of case").first
    link = first.locator('a[href*="BraTS-GLI-00042-000_ET.nii.gz"]').first
    assert link.count() == 1 and first.locator("table").count() == 1
    assert first.locator('a[href*="answer.json"]').count() == 1
    assert page.request.get(link.evaluate("a => a.href")).status == 200  # absolute, as the browser resolves it
    last = page.locator("#chat .message-row").filter(has_text="peritumoral edema of case").last
    assert last.locator('a[href*="BraTS-GLI-00042-000_ED.nii.gz"]').count() == 1
    assert last.locator('a[href*="_ET.nii.gz"]').count() == 0

    # -- 4: the table: short headers with units, one interval (no boundary range), one number format.
    table = page.locator("#measurements")
    assert table.get_by_text("ED", exact=True).count() == 1
    headers = table.locator("th").all_inner_texts()
    flat = [" ".join(h.split()) for h in headers]
    assert "Volume (mL)" in flat and not any(h.startswith("Range") for h in flat), flat
    for th in table.locator("th").all():  # no word broken across lines, nothing cut off
        assert th.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
        assert th.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"
    assert table.evaluate("e => e.querySelector('table').scrollWidth <= e.clientWidth + 1")

    # -- 6: downloads named by case, plus one zip with masks, answer.json and a CSV.
    names = page.locator("#downloads").inner_text().replace("\n", "")
    assert "BraTS-GLI-00042-000_ED.nii.gz" in names and "BraTS-GLI-00042-000_all.zip" in names
    href = page.locator('#downloads a[href*="_all.zip"]').first.get_attribute("href")
    z = zipfile.ZipFile(io.BytesIO(page.request.get(href).body()))
    members = set(z.namelist())
    assert {"BraTS-GLI-00042-000_ED.nii.gz", "BraTS-GLI-00042-000_answer.json",
            "BraTS-GLI-00042-000_measurements.csv"} <= members
    assert json.loads(z.read("BraTS-GLI-00042-000_answer.json"))["targets"][0]["mask"] == \
        "BraTS-GLI-00042-000_ED.nii.gz"

    # -- 5: the viewer: the current answer's concepts only, shared colours, R/L marks, linked
    # planes, captions "slice i of n".
    v = _viewer(page)
    assert v["concepts"] == ["ED"]
    assert v["colors"] == [list(vocab.colors()["ED"])]
    cap = page.locator("#viewer .vv-cap").first.inner_text()
    assert re.fullmatch(r"\w+ · slice \d+ of \d+", cap), cap
    assert dict((n, m) for n, m, _ in v["planes"]) == {"axial": ["R", "L"], "coronal": ["R", "L"],
                                                       "sagittal": ["A", "P"]}
    axial = page.locator('#viewer canvas[data-plane="axial"]')
    z0 = v["vox"][2]
    axial.hover()
    page.mouse.wheel(0, -120)
    page.mouse.wheel(0, -120)
    assert _viewer(page)["vox"][2] == z0 + 2
    axial.focus()
    page.keyboard.press("ArrowDown")
    assert _viewer(page)["vox"][2] == z0 + 1
    before = _viewer(page)["vox"]
    box = axial.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    after = _viewer(page)["vox"]
    assert after[2] == before[2] and (after[0], after[1]) != (before[0], before[1])
    # Radiological: the left part of the axial picture is the patient's right (high x, RAS+).
    assert after[0] > _viewer(page)["shape"][0] / 2
    page.locator("#viewer .vv-opacity").fill("80")
    assert abs(_viewer(page)["opacity"] - 0.8) < 1e-6
    page.locator('#viewer input[data-code="ED"]').uncheck()
    assert _viewer(page)["off"].get("ED") is True
    page.locator("#viewer-seq").get_by_text("FLAIR", exact=True).click()
    page.wait_for_function("() => document.querySelector('#viewer').innerText.includes('FLAIR')", timeout=T)
    assert all("-t2f-" in bg.rsplit("/", 1)[-1] for _, _, bg in _viewer(page)["planes"])

    # -- 2: a refused question keeps the picture, table, files and viewer.
    page.fill("#query textarea", "segment the liver")
    page.press("#query textarea", "Enter")
    page.locator("#chat").get_by_text("I can segment").wait_for(timeout=T)
    page.wait_for_timeout(500)
    assert table.get_by_text("ED", exact=True).count() == 1
    assert "BraTS-GLI-00042-000_all" in page.locator("#downloads").inner_text()
    assert _viewer(page)["concepts"] == ["ED"]
    assert page.locator("#chat img").count() >= 2

    # -- 7: clicking an example asks it.
    n = len(_bubbles(page))
    page.locator("#examples").get_by_text("what fraction of the tumor core is necrotic?").click()
    page.locator("#chat").get_by_text("necrotic tumor core of case").wait_for(timeout=T)
    assert len(_bubbles(page)) >= n + 2
    assert not errors, errors
    page.close()


@needs_chromium
def test_browser_narrow_width(fake_app, browser, tmp_path):
    app, _ = fake_app
    page = browser.new_page(viewport={"width": 400, "height": 860})
    page.goto(app.url)
    page.get_by_label(app.samples.names[0]).check(timeout=T)
    page.click("#load-sample")
    page.locator("#chat").get_by_text("Loaded").wait_for(timeout=T)
    page.fill("#query textarea", "segment the enhancing tumor")
    page.click("#ask")
    page.locator("#chat").get_by_text("enhancing tumor of case").wait_for(timeout=T)
    page.locator("#viewer canvas").first.wait_for(timeout=T)
    # Nothing wider than the screen; chat, question box and button side by side and clickable.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 401
    q, ask = page.locator("#query").bounding_box(), page.locator("#ask").bounding_box()
    assert q["x"] >= 0 and ask["x"] + ask["width"] <= 401 and not _overlap(q, ask)
    chat = page.locator("#chat").bounding_box()
    assert chat["width"] >= 330 and chat["height"] >= 300
    assert page.locator("#viewer canvas").first.bounding_box()["width"] >= 150
    page.wait_for_timeout(500)
    _shot(page, tmp_path, "screenshot-narrow.png", full_page=True)


@needs_chromium
def test_phone_question_box_on_the_first_screen(fake_app, browser, tmp_path):
    """Issue 22: on a phone (390×844) the question box is within the first screen after a case
    is loaded (it was 1,260 px down the page), and asking from there works."""
    app, _ = fake_app
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(app.url)
    page.get_by_label(app.samples.names[0]).check(timeout=T)
    page.click("#load-sample")
    page.locator("#chat").get_by_text("Loaded").wait_for(timeout=T)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    q, ask = page.locator("#query").bounding_box(), page.locator("#ask").bounding_box()
    assert q["y"] >= 0 and q["y"] + q["height"] <= 844, q
    assert ask["y"] + ask["height"] <= 844 and ask["x"] + ask["width"] <= 391
    page.fill("#query textarea", "segment the edema")
    page.click("#ask")
    page.locator("#chat").get_by_text("peritumoral edema of case").wait_for(timeout=T)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 391
    _shot(page, tmp_path, "screenshot-phone.png")
    page.close()

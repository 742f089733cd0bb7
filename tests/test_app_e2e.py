"""End to end with the real stack: a tiny random-weights checkpoint served on a free localhost
port, asked through gradio_client, and driven in a real headless Chromium (Playwright).

Only the app's behaviour is checked, never the (random) model's accuracy.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import pytest

from app_fakes import copy_case_writer, free_port, point_gradio_at, restore_env, save_gradio_env

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _page(url: str, *, width: int, height: int = 900):
    """A page of the app in a fresh headless Chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def real_app(tmp_path_factory, phantom_case_2mm):
    import torch

    from vlseg.app.security import AppConfig
    from vlseg.app.server import create_app
    from vlseg.model.checkpoint import save_checkpoint
    from vlseg.model.registry import build_model

    saved = save_gradio_env()
    tmp = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("tiny"), tmp / "tiny-random",
                           {"note": "random weights, app tests only"})
    cfg = AppConfig(output_root=tmp / "out", samples_dir=tmp / "samples", port=free_port(),
                    model=str(ckpt), sample_seeds=(7,), sample_spacing_mm=2.0, sample_pairs=1)
    point_gradio_at(cfg)
    from vlseg.synth.pairs import write_pair

    app = create_app(cfg, sample_writer=copy_case_writer(phantom_case_2mm), pair_writer=write_pair)
    app.launch()
    assert app.samples.wait(120)
    yield app, phantom_case_2mm
    app.close()
    restore_env(saved)


def test_e2e_answer_through_gradio_client(real_app):
    from gradio_client import Client, handle_file

    app, case = real_app
    assert app.url.startswith("http://127.0.0.1:")
    files = [handle_file(str(p)) for p in sorted(case.glob("*-t*.nii.gz"))]
    client = Client(app.url, verbose=False)
    answer, masks = client.predict(files, "segment the enhancing tumor", api_name="/ask")
    assert answer["refused"] is False and answer["intent"] == "segment"
    assert [t["concept"] for t in answer["targets"]] == ["ET"]
    assert answer["model"]["name"] == "tiny" and "timing_s" in answer and answer["text"]
    src = nib.load(next(case.glob("*-t1c.nii.gz")))
    mask = nib.load(masks[0])
    assert Path(masks[0]).name == "ET.nii.gz"
    assert mask.shape == src.shape and (mask.affine == src.affine).all()
    assert set(mask.get_fdata().ravel().tolist()) <= {0.0, 1.0}
    # Out of scope: a refusal, not a mask.
    answer, masks = client.predict(files, "segment the liver", api_name="/ask")
    assert answer["refused"] is True and not masks


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian chromium not installed at /usr/bin/chromium (.ci/run installs it)")
def test_browser_sample_case_chat(real_app, tmp_path):
    app, _ = real_app
    sample = app.samples.names[0]
    shot = tmp_path / "app.png"
    with _page(app.url, width=1400) as page:
        page.locator("#load-sample").wait_for(timeout=60_000)
        # A disguised file gets a clear message in the chat; the page keeps working.
        evil = tmp_path / "scan-t1c.nii.gz"
        evil.write_text("<html><script>alert(1)</script></html>")
        page.set_input_files("#upload input[type=file]", [str(evil)])
        page.wait_for_timeout(1000)
        page.click("#load-upload")
        page.locator("#chat").get_by_text("not a NIfTI").wait_for(timeout=60_000)
        page.get_by_label(sample).check(timeout=60_000)
        page.click("#load-sample")
        chat = page.locator("#chat")
        chat.get_by_text("Loaded").wait_for(timeout=120_000)
        n_before = page.locator("#chat .message-row").count()
        page.fill("#query textarea", "segment the enhancing tumor")
        page.click("#ask")
        # The question shows at once; the answer text (grounded, with the disclaimer), the
        # overlay picture in its bubble, the table and the viewer's legend follow.
        question = page.locator("#chat .message-row").nth(n_before)
        question.wait_for(timeout=10_000)
        assert question.inner_text().strip() == "segment the enhancing tumor"
        page.wait_for_function(
            "() => !document.querySelector('#chat').innerText.includes('Answering')"
            " && !document.querySelector('#chat').innerText.includes('Queued')", timeout=120_000)
        answer = page.locator("#chat .message-row").nth(n_before + 1).inner_text()
        assert "enhancing" in answer.lower() and "not a diagnosis" in answer.lower()
        page.locator("#chat img").last.wait_for(timeout=60_000)
        assert page.locator("#measurements").get_by_text("ET", exact=True).count() >= 1
        page.locator("#viewer").get_by_text("enhancing tumor").wait_for(timeout=60_000)
        assert page.locator("#downloads").inner_text().replace("\n", "").count(f"{sample}_ET.nii.gz") == 1
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("VLSEG_SCREENSHOT_OUT")  # set by hand to refresh docs/screenshot.png
    if keep:
        shutil.copyfile(shot, keep)


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian chromium not installed at /usr/bin/chromium (.ci/run installs it)")
def test_browser_three_turn_follow_up_dialogue(real_app, tmp_path):
    """Issue 22: a conversation, not a form. "it" and "and the edema?" are resolved from the
    previous answer in the browser; each answer's bubble links its own answer.json, which
    records what was resolved from context."""
    app, _ = real_app
    sample = app.samples.names[0]
    with _page(app.url, width=1440) as page:
        page.get_by_label(sample).check(timeout=60_000)
        page.click("#load-sample")
        page.locator("#chat").get_by_text("Loaded").wait_for(timeout=120_000)
        turns = ("segment the necrotic core", "how big is it compared to the whole tumor?",
                 "and the edema?")
        docs = []
        for k, question in enumerate(turns):
            page.fill("#query textarea", question)
            page.click("#ask")
            page.wait_for_timeout(300)
            page.wait_for_function(
                "() => !document.querySelector('#chat').innerText.includes('Answering')"
                " && !document.querySelector('#chat').innerText.includes('Queued')", timeout=180_000)
            bubble = page.locator("#chat .message-row").filter(has_text="not a diagnosis").last
            href = bubble.locator('a[href*="answer.json"]').first.evaluate("a => a.href")
            docs.append(json.loads(page.request.get(href).body()))
            assert docs[-1]["query"] == question
        assert docs[0]["intent"] == "segment" and docs[0]["resolved_from_context"] is None
        assert docs[1]["intent"] == "ratio" and [t["concept"] for t in docs[1]["targets"]] == ["NCR", "WT"]
        assert docs[1]["resolved_from_context"]["targets"] == ["NCR"]
        assert "of the whole tumor" in docs[1]["text"] or "whole tumor is empty" in docs[1]["text"]
        assert docs[2]["intent"] == "ratio" and docs[2]["targets"][0]["concept"] == "ED"
        assert docs[2]["resolved_from_context"] is not None
        # The first answer's mask is still downloadable from its own bubble.
        first = page.locator("#chat .message-row").filter(has_text="not a diagnosis").first
        mask = first.locator(f'a[href*="{sample}_NCR.nii.gz"]').first
        assert page.request.get(mask.evaluate("a => a.href")).status == 200


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian chromium not installed at /usr/bin/chromium (.ci/run installs it)")
def test_browser_two_time_points_side_by_side(real_app, tmp_path):
    """Issue 23: a sample pair compared in the browser; the viewer draws both scans side by side
    (three planes each, the follow-up registered, the change classes in the legend) and the
    table gives the change per region with the RANO category."""
    app, _ = real_app
    name = app.samples.pair_names[0]
    with _page(app.url, width=1400) as page:
        page.get_by_text("Two time points: compare").click(timeout=60_000)
        page.get_by_label(name).check(timeout=60_000)
        page.click("#compare-sample")
        page.locator("#chat").get_by_text("side by side").wait_for(timeout=240_000)
        page.wait_for_function(
            "() => document.querySelectorAll('#viewer canvas[data-panel]').length === 6", timeout=60_000)
        # The registered follow-up is drawn (not a black canvas) in its own panel
        page.wait_for_function("""() => {
            const c = document.querySelector('#viewer canvas[data-panel="1"][data-plane="axial"]');
            if (!c || !c.width) return false;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) n++;
            return n > 1000;
        }""", timeout=60_000)
        caption = page.locator('#viewer canvas[data-panel="1"][data-plane="axial"]').locator("xpath=..")
        assert caption.inner_text().startswith("Follow-up")
        page.locator("#viewer").get_by_text("new enhancing lesion").wait_for(timeout=10_000)
        assert page.locator("#measurements").get_by_text("RANO imaging category").count() == 1
        page.screenshot(path=str(tmp_path / "pair.png"), full_page=True)

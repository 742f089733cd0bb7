"""MCP end to end with the official ``mcp`` Python client: `vlseg mcp` over stdio (the bundled
model on a DICOM study), and `vlseg serve --mcp` over the app's HTTP server (a stand-in model),
which stays behind the app's Host checks."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import sys
from pathlib import Path

import pytest
from dicom_cases import FILLED_TAGS, PHI_STRINGS, phantom_images, study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dicom_study(phantom_case_2mm, tmp_path_factory):
    return study(phantom_images(phantom_case_2mm), tmp_path_factory.mktemp("mcp") / "study-7",
                 seed="mcp", patient=FILLED_TAGS)


def _payload(result) -> dict:
    assert not result.isError, result.content[0].text
    if result.structuredContent:
        return result.structuredContent.get("result", result.structuredContent)
    return json.loads(result.content[0].text)


async def _stdio_session(out: Path, dicom: Path, nifti: Path) -> dict:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "HF_HUB_OFFLINE",
                                                         "TRANSFORMERS_OFFLINE", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    params = StdioServerParameters(command=sys.executable, cwd=str(REPO), env=env,
                                   args=["-m", "vlseg", "mcp", "--out", str(out), "--threads", "1"])
    seen: dict = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            seen["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
            early = await session.call_tool("ask", {"question": "segment the tumor"})
            seen["early"] = (early.isError, early.content[0].text)
            bad = await session.call_tool("load_case", {"path": str(out / "nowhere")})
            seen["bad"] = (bad.isError, bad.content[0].text)
            seen["summary"] = _payload(await session.call_tool("load_case", {"path": str(dicom)}))
            seen["answer"] = _payload(await session.call_tool(
                "ask", {"question": "how big is the whole tumor and the necrotic core?"}))
            seen["summary_nifti"] = _payload(await session.call_tool("load_case", {"path": str(nifti)}))
            seen["answer_nifti"] = _payload(await session.call_tool("ask", {"question": "segment the edema"}))
    return seen


def test_stdio_server_with_the_official_client(dicom_study, phantom_case_2mm, tmp_path):
    seen = asyncio.run(asyncio.wait_for(_stdio_session(tmp_path / "out", dicom_study, phantom_case_2mm),
                                        timeout=300))
    assert seen["tools"] == ["ask", "compare", "load_case"]
    assert seen["early"][0] and "call load_case" in seen["early"][1]
    assert seen["bad"][0] and "not found" in seen["bad"][1] and "\n" not in seen["bad"][1].strip()

    summary = seen["summary"]
    assert summary["format"] == "dicom" and summary["sequences"] == ["t1n", "t1c", "t2w", "t2f"]
    assert summary["series"]["t1c"].startswith("#3 'AX T1 SE POST GD'")
    answer = seen["answer"]
    assert "Whole tumor" in answer["text"] or "whole tumor" in answer["text"].lower()
    assert [m["concept"] for m in answer["measurements"]] == ["WT", "NCR"]
    assert all(Path(p).is_file() for p in answer["masks"].values())
    assert Path(answer["dicom_seg"]).is_file()
    doc = json.loads(Path(answer["answer_json"]).read_text())
    assert doc["dicom_seg"]["file"] == Path(answer["dicom_seg"]).name
    blob = json.dumps(seen)
    assert not [s for s in PHI_STRINGS if s.lower() in blob.lower()]

    assert seen["summary_nifti"]["format"] == "nifti"
    assert seen["answer_nifti"]["dicom_seg"] is None and "ED" in seen["answer_nifti"]["masks"]


def _raw_status(port: int, path: str, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_serve_mcp_over_http_behind_the_host_checks(dicom_study, tmp_path):
    from app_fakes import (FakeSegmenter, copy_case_writer, fake_fork, free_port, point_gradio_at,
                           restore_env, save_gradio_env, small_case)
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from vlseg.app.security import AppConfig
    from vlseg.app.server import create_app

    saved = save_gradio_env()
    cfg = AppConfig(output_root=tmp_path / "out", samples_dir=tmp_path / "samples", port=free_port(),
                    sample_seeds=(1,), sample_spacing_mm=2.0)
    point_gradio_at(cfg)
    app = create_app(cfg, segmenter=FakeSegmenter(), fork=fake_fork, mcp=True,
                     sample_writer=copy_case_writer(small_case(tmp_path / "src", "S", shift=5)))
    try:
        url = app.launch()
        port = cfg.port

        async def talk() -> dict:
            out = {}
            async with streamable_http_client(f"{url.rstrip('/')}/gradio_api/mcp/") as (r, w, _):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
                    res = await session.call_tool("load_case", {"path": str(dicom_study)})
                    out["load"] = (res.isError, res.content[0].text)
                    res = await session.call_tool("ask", {"question": "segment the whole tumor"})
                    out["ask"] = (res.isError, res.content[0].text)
            return out

        seen = asyncio.run(asyncio.wait_for(talk(), timeout=120))
        assert {"load_case", "ask"} <= set(seen["tools"])
        assert not seen["load"][0] and "t1c" in seen["load"][1]
        assert not seen["ask"][0] and "WT" in seen["ask"][1]
        assert not [s for s in PHI_STRINGS if s.lower() in json.dumps(seen).lower()]
        # The MCP endpoint is mounted on the app: a foreign Host is refused like any route.
        assert _raw_status(port, "/gradio_api/mcp/schema", f"127.0.0.1:{port}") == 200
        assert _raw_status(port, "/gradio_api/mcp/schema", "evil.example") == 421
    finally:
        app.close()
        restore_env(saved)


def test_serve_mcp_needs_a_loopback_host(capsys):
    from vlseg.cli import main

    assert main(["serve", "--mcp", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


# ------------------------------------------------------------------------------ CaseTools in process
def _tools(tmp_path):
    from app_fakes import FakeSegmenter

    from vlseg.mcp_server import CaseTools

    return CaseTools(segmenter=FakeSegmenter(), out_root=tmp_path / "out")


def test_a_failed_load_case_leaves_no_case_and_refusals_write_nothing(tmp_path):
    from app_fakes import small_case

    from vlseg.errors import InputError

    tools = _tools(tmp_path)
    tools.load_case(str(small_case(tmp_path / "src", "CASE-A", shift=2)))
    assert tools.ask("segment the whole tumor")["masks"]
    with pytest.raises(InputError):
        tools.load_case(str(tmp_path / "nonexistent"))
    with pytest.raises(InputError, match="no case is loaded"):
        tools.ask("how big is it?")  # never answered for the study loaded before

    tools.load_case(str(small_case(tmp_path / "src", "CASE-B", shift=3)))
    before = sorted(p for p in (tmp_path / "out").rglob("*"))
    refused = tools.ask("segment the liver")
    assert refused["refused"] and refused["answer_json"] is None and refused["masks"] == {}
    assert sorted(p for p in (tmp_path / "out").rglob("*")) == before  # no folder, no file


def test_errors_are_words_for_an_agent_never_flags_or_exception_classes():
    from vlseg.errors import InputError
    from vlseg.io.dicom_study import Series, Study, map_sequences
    from vlseg.mcp_server import agent_words

    def series(number, desc, uid, seq="t1c"):
        return Series(uid=uid, number=number, description=desc, protocol="", n_images=3, sequence=seq)

    # Two candidates numbered alike: the hint names them by description, then by UID.
    study = Study(folder=Path("/s"), series=[series(1, "T1 POST A", "1.2.3"), series(1, "T1 POST B", "1.2.4")])
    with pytest.raises(InputError) as e:
        map_sequences(study)
    assert "series=t1c='DESCRIPTION'" in str(e.value) and "NUMBER" not in str(e.value)
    msg = agent_words(e.value)
    assert 'the series parameter, e.g. {"t1c": "DESCRIPTION"}' in msg and "--" not in msg
    study = Study(folder=Path("/s"), series=[series(1, "T1", "1.2.3"), series(1, "T1", "1.2.4")])
    with pytest.raises(InputError, match="t1c=UID, one of 1.2.3, 1.2.4"):
        map_sequences(study)
    # Distinct numbers: by number.
    study = Study(folder=Path("/s"), series=[series(3, "T1", "1.2.3"), series(7, "T1", "1.2.4")])
    with pytest.raises(InputError, match="series=t1c=NUMBER"):
        map_sequences(study)
    # A CT-only study: no hint (naming a series cannot help).
    ct = Series(uid="9", number=2, description="CT HEAD", protocol="", n_images=3,
                is_mr_image=False, excluded="not an MR image")
    with pytest.raises(InputError) as e:
        map_sequences(Study(folder=Path("/s"), series=[ct]))
    assert "no MR image series" in str(e.value) and "series=" not in str(e.value)

    assert agent_words(InputError("series='AX' matches no series; the study holds: x")) == \
        "the series value 'AX' matches no series; the study holds: x"
    assert agent_words(FileNotFoundError(2, "No such file or directory", "/x")) == \
        "/x: no such file or directory"
    for error in (KeyError("k"), RuntimeError(), ValueError("invalid literal for int()")):
        text = agent_words(error)
        assert type(error).__name__ not in text and "internal error" in text

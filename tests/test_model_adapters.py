"""LoRA adapters are first-class models: round trip, base named by sha256, every loader takes them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlseg.errors import ModelError
from vlseg.model import build_model, checkpoint_sha256, load_model, resolve_model
from vlseg.model.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BaseRef,
    adapter_sha256,
    add_adapters,
    adapter_state_dict,
    load_adapter,
    save_adapter,
)
from vlseg.model.loading import checkpoint_ref


def _randomize_lora_b(model) -> None:
    with torch.no_grad():                       # make the adapter non-trivial
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)


def test_adapter_is_small_and_round_trips_on_tiny(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny")
    base_state = {k: v.clone() for k, v in model.checkpoint_state_dict().items()}
    full = sum(v.numel() for v in base_state.values())
    spec = add_adapters(model, rank=2, alpha=4.0, text_rank=4)
    lora = adapter_state_dict(model)
    assert 0 < sum(v.numel() for v in lora.values()) <= 0.05 * full
    assert any(k.startswith("image_encoder.") for k in lora) and any(k.startswith("text_encoder.") for k in lora)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    _randomize_lora_b(model)
    save_adapter(model, spec, tmp_path / "ad", base=BaseRef(sha256="0" * 64, name="tiny-random"),
                 provenance={"note": "test"})
    meta = json.loads((tmp_path / "ad" / ADAPTER_CONFIG).read_text())
    assert meta["base"]["sha256"] == "0" * 64 and meta["provenance"]["weights_sha256"] == adapter_sha256(tmp_path / "ad")
    x = torch.randn(1, 4, 32, 32, 32)
    present = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        ref = model.eval()(x, present, ["edema"])

    # The same base + the saved adapter reproduces the fine-tuned outputs
    base = build_model("tiny")
    base.load_state_dict(base_state, strict=False)
    with torch.no_grad():
        plain = base.eval()(x, present, ["edema"])
        applied = load_adapter(base, tmp_path / "ad").eval()(x, present, ["edema"])
    assert torch.allclose(applied, ref, atol=1e-5) and not torch.allclose(plain, ref, atol=1e-3)

    # A tampered adapter is refused with a clear error
    tensors = load_file(str(tmp_path / "ad" / ADAPTER_WEIGHTS))
    tensors["image_encoder.extra.lora_A.default.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "ad" / ADAPTER_WEIGHTS))
    with pytest.raises(ModelError, match="does not match"):  # its sha256 no longer matches
        load_adapter(build_model("tiny"), tmp_path / "ad")
    meta["provenance"]["weights_sha256"] = adapter_sha256(tmp_path / "ad")  # made consistent
    (tmp_path / "ad" / ADAPTER_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unexpected"):
        load_adapter(build_model("tiny"), tmp_path / "ad")


@pytest.fixture(scope="module")
def adapter_on_random(random_checkpoint, tmp_path_factory) -> Path:
    """A rank-2 adapter (random B) on the session's random `tiny` checkpoint, named by its path."""
    torch.manual_seed(1)
    model = load_model(random_checkpoint)
    spec = add_adapters(model, rank=2, alpha=4.0, text_rank=4)
    _randomize_lora_b(model)
    out = tmp_path_factory.mktemp("adapters") / "run" / "checkpoints" / "step_0000002"
    return save_adapter(model, spec, out, base=checkpoint_ref(random_checkpoint), provenance={"steps": 2})


def _with_base_sha(adapter: Path, dest: Path, sha: str) -> Path:
    shutil.copytree(adapter, dest)
    meta = json.loads((dest / ADAPTER_CONFIG).read_text())
    meta["base"]["sha256"] = sha
    (dest / ADAPTER_CONFIG).write_text(json.dumps(meta))
    return dest


def test_load_model_takes_an_adapter_folder(adapter_on_random, random_checkpoint):
    source = resolve_model(adapter_on_random)
    assert source.kind == "adapter" and source.checkpoint == random_checkpoint
    assert source.base.path == str(random_checkpoint.resolve())
    # ... and its weights file or adapter.json, like a checkpoint's model.safetensors
    assert resolve_model(adapter_on_random / ADAPTER_WEIGHTS).adapter == adapter_on_random
    tuned, plain = load_model(adapter_on_random), load_model(random_checkpoint)
    x = torch.randn(1, 4, 32, 32, 32)
    present = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        assert not torch.allclose(tuned(x, present, ["edema"]), plain(x, present, ["edema"]), atol=1e-4)
    assert not any(p.requires_grad for p in tuned.parameters()) and not tuned.training


def test_base_sha_mismatch_and_missing_base_are_one_line_errors(adapter_on_random, tmp_path):
    bad = _with_base_sha(adapter_on_random, tmp_path / "tampered", "f" * 64)
    with pytest.raises(ModelError, match=r"trained on base checkpoint sha256 ffffffffffff") as e:
        load_model(bad)
    assert "\n" not in str(e.value)
    gone = tmp_path / "gone"
    shutil.copytree(adapter_on_random, gone)
    meta = json.loads((gone / ADAPTER_CONFIG).read_text())
    meta["base"] = {"sha256": "0" * 64, "name": None, "path": str(tmp_path / "nowhere")}
    (gone / ADAPTER_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="base checkpoint .* is not found"):
        load_model(gone)
    del meta["base"]
    (gone / ADAPTER_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="names no valid base checkpoint"):
        load_model(gone)


def test_segmenter_answer_names_base_and_adapter(adapter_on_random, random_checkpoint):
    from vlseg import Segmenter

    seg = Segmenter.from_pretrained(adapter_on_random)
    info = seg.model_info()
    sha = checkpoint_sha256(random_checkpoint)
    assert info["checkpoint"] == random_checkpoint.name and info["checkpoint_sha256"] == sha
    assert info["base"] == {"checkpoint": random_checkpoint.name, "sha256": sha}
    assert info["adapter"]["name"] == "run/step_0000002"
    assert info["adapter"]["sha256"] == adapter_sha256(adapter_on_random) and info["adapter"]["rank"] == 2
    assert seg.fork().model_info() == info
    # A full checkpoint: the same keys, no adapter
    plain = Segmenter.from_pretrained(random_checkpoint).model_info()
    assert plain["adapter"] is None and plain["base"]["sha256"] == plain["checkpoint_sha256"] == sha


def test_models_lists_checkpoints_and_adapters(adapter_on_random, random_checkpoint, tmp_path, capsys):
    from vlseg.cli import main

    bad = _with_base_sha(adapter_on_random, tmp_path / "tampered", "e" * 64)
    rc = main(["models", str(random_checkpoint), str(adapter_on_random), str(bad)])
    out = capsys.readouterr().out
    assert rc == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "full checkpoint" in lines[str(random_checkpoint)]
    line = lines[str(adapter_on_random)]
    assert "LoRA adapter (rank 2" in line and str(random_checkpoint) in line and "found" in line
    assert "UNUSABLE" in lines[str(bad)]
    assert "default (bundled)" in out or "bundled: none" in out
    rc = main(["models", str(tmp_path / "nothing-here")])
    err = capsys.readouterr().err
    assert rc == 2 and "no such checkpoint" in err and len(err.strip().splitlines()) == 1


def test_training_cannot_start_from_an_adapter(adapter_on_random):
    from vlseg.errors import InputError
    from vlseg.training.build import init_folder
    from vlseg.training.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "train" / "configs" / "finetune_lora.yaml",
                      [f"init_checkpoint={adapter_on_random}"])
    with pytest.raises(InputError, match="is a LoRA adapter"):
        init_folder(cfg)


def test_serve_takes_an_adapter_and_refuses_a_tampered_one(adapter_on_random, tmp_path, capsys, monkeypatch):
    import argparse

    from vlseg.app.cli import config_from_args
    from vlseg.app.server import create_app
    from vlseg.cli import main
    from vlseg.segmenter import Segmenter

    loaded = []
    original = Segmenter.from_pretrained.__func__
    monkeypatch.setattr(Segmenter, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loaded.append(original(cls, *a, **k)) or loaded[-1]))
    args = argparse.Namespace(host="127.0.0.1", port=7861, model=str(adapter_on_random), device="cpu",
                              outputs=str(tmp_path / "app"), samples=str(tmp_path / "samples"))
    from app_fakes import point_gradio_at, restore_env, save_gradio_env

    cfg, saved = config_from_args(args, environ={}), save_gradio_env()
    point_gradio_at(cfg)
    app = create_app(cfg)
    app.close()
    restore_env(saved)
    assert loaded[0].model_info()["adapter"]["sha256"] == adapter_sha256(adapter_on_random)
    monkeypatch.undo()
    bad = _with_base_sha(adapter_on_random, tmp_path / "tampered", "d" * 64)
    from app_fakes import free_port  # serve checks its port is free before the model loads

    rc = main(["serve", "--model", str(bad), "--outputs", str(tmp_path / "app2"),
               "--samples", str(tmp_path / "samples"), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert rc == 2 and "trained on base checkpoint sha256 dddddddddddd" in err
    assert [ln for ln in err.splitlines() if "error" in ln] == [err.strip().splitlines()[-1]]


def test_evaluate_model_script_takes_an_adapter(adapter_on_random, phantom_case_2mm):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "bench" / "evaluate_model.py"
    spec = importlib.util.spec_from_file_location("evaluate_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.evaluate(str(adapter_on_random), phantom_case_2mm.parent, threads=1, limit=1)
    assert result["weights"]["adapter"]["sha256"] == adapter_sha256(adapter_on_random)
    assert {r["subset"] for r in result["per_case"]} == {"all4", "t1c+t2f"}

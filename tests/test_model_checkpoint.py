"""Checkpoints: safetensors + JSON round trip, strict keys, pickles refused unread, bundled lookup."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vlseg.errors import ModelError
from vlseg.model import ModelConfig, build_model, checkpoint_sha256, load_model, save_checkpoint
from vlseg.model import checkpoint as ckpt


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from test_text_encoders import make_tiny_bert_dir

    return make_tiny_bert_dir(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def saved(bert_dir, tmp_path_factory):
    """(model, folder) of a small model with text LoRA, trained one step so LoRA B is nonzero."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="ck", channels=(4, 8, 16), head_scales=2, feature_dim=4, prompt_dim=8,
                      head_hidden=(4,), text_encoder=f"hf:{bert_dir}", text_lora_rank=2,
                      patch_size=(16, 16, 16))
    model = build_model(cfg)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("ck") / "run", {"steps": 7, "seed": 3})
    return model.eval(), folder


def _outputs(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 16, 16, 16, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([[True, True, False, True]]), ["edema", "necrotic core"])


def test_round_trip_is_exact_and_excludes_frozen_text_base(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    text_keys = [k for k in keys if k.startswith("text_encoder.")]
    assert text_keys and all("lora_" in k for k in text_keys)  # adapters in, base weights out
    loaded = load_model(folder)
    assert loaded.config == model.config and not loaded.training
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)
    # ... also when given the weights file itself
    torch.testing.assert_close(_outputs(load_model(folder / "model.safetensors")), _outputs(model))


def test_config_json_has_provenance(saved):
    _, folder = saved
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "vlseg-checkpoint" and meta["model"]["name"] == "ck"
    prov = meta["provenance"]
    assert prov["steps"] == 7 and prov["seed"] == 3
    assert {"git_commit", "created", "versions", "weights_sha256"} <= set(prov)
    assert prov["weights_sha256"] == checkpoint_sha256(folder)
    assert prov["versions"]["torch"] == torch.__version__


def _copy(folder: Path, dest: Path, mutate) -> Path:
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    mutate(state)
    save_file(state, str(dest / "model.safetensors"))
    # A self-consistent checkpoint (its config records the new weights' sha256), so the key
    # checks are what refuses it; tests/test_hardening_weights.py covers a sha256 mismatch.
    meta = json.loads((dest / "config.json").read_text())
    meta["provenance"]["weights_sha256"] = checkpoint_sha256(dest)
    (dest / "config.json").write_text(json.dumps(meta))
    return dest


def test_unexpected_missing_and_misshaped_keys_are_refused(saved, tmp_path):
    _, folder = saved
    extra = _copy(folder, tmp_path / "extra", lambda s: s.update({"evil.weight": torch.zeros(1)}))
    with pytest.raises(ModelError, match="evil.weight"):
        load_model(extra)
    gone = _copy(folder, tmp_path / "gone", lambda s: s.pop("head.controllers.0.bias"))
    with pytest.raises(ModelError, match=r"head\.controllers\.0\.bias"):
        load_model(gone)
    shaped = _copy(folder, tmp_path / "shaped",
                   lambda s: s.update({"head.controllers.0.bias": torch.zeros(3)}))
    with pytest.raises(ModelError, match="shapes"):
        load_model(shaped)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickles_are_refused_without_unpickling(saved, tmp_path):
    _, folder = saved
    marker = tmp_path / "PWNED"
    blob = pickle.dumps({"state_dict": _Payload(marker)})
    pt = tmp_path / "model.pt"
    pt.write_bytes(blob)
    with pytest.raises(ModelError, match="never loaded"):
        load_model(pt)
    disguised = tmp_path / "disguised"
    disguised.mkdir()
    (disguised / "config.json").write_text((folder / "config.json").read_text())
    (disguised / "model.safetensors").write_bytes(blob)
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model(disguised)
    assert not marker.exists()


def test_bad_config_json(saved, tmp_path):
    _, folder = saved
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (bad / "config.json").write_text('{"format": "something-else", "model": {}}')
    with pytest.raises(ModelError, match="not a vlseg checkpoint"):
        load_model(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_model(bad)


def test_bundled_lookup(saved, tmp_path, monkeypatch):
    model, folder = saved
    monkeypatch.setattr(ckpt, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(ModelError, match="no bundled checkpoint.*train"):
        load_model()
    with pytest.raises(ModelError, match="model config, not a trained checkpoint"):
        load_model("tiny")
    with pytest.raises(ModelError, match="no such checkpoint"):
        load_model(tmp_path / "nowhere")
    save_checkpoint(model, tmp_path / "weights" / "default", {"steps": 1})
    assert ckpt.list_bundled() == ["default"]
    torch.testing.assert_close(_outputs(load_model()), _outputs(model))
    torch.testing.assert_close(_outputs(load_model("default")), _outputs(model))


def test_save_is_atomic_and_keeps_old_checkpoint_on_failure(saved, tmp_path, monkeypatch):
    model, folder = saved
    out = save_checkpoint(model, tmp_path / "run", {})
    before = (out / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(model, out, {})
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_weight_average_interpolates_every_tensor_and_records_both(saved, tmp_path):
    model, folder = saved
    other = build_model(model.config)
    for p in other.parameters():
        torch.nn.init.normal_(p)
    second = save_checkpoint(other, tmp_path / "second", {"steps": 9})
    out = ckpt.average_checkpoints(folder, second, tmp_path / "avg", weight=0.25)
    a, b = model.checkpoint_state_dict(), other.checkpoint_state_dict()
    got = load_file(str(out / ckpt.WEIGHTS_FILE))
    assert set(got) == set(a)
    for k in a:
        assert torch.allclose(got[k].float(), 0.75 * a[k].float() + 0.25 * b[k].float(), atol=1e-6), k
    prov = json.loads((out / ckpt.CONFIG_FILE).read_text())["provenance"]["weight_average"]
    assert prov["weight"] == 0.25 and prov["first"]["sha256"] == checkpoint_sha256(folder)
    assert prov["second"]["provenance"]["steps"] == 9
    assert load_model(out) is not None                     # a normal, loadable checkpoint
    with pytest.raises(ModelError, match="weight"):
        ckpt.average_checkpoints(folder, second, tmp_path / "bad", weight=1.5)


def test_weight_average_refuses_different_models(saved, tmp_path):
    model, folder = saved
    cfg = model.config.to_dict() | {"feature_dim": 8}
    other = save_checkpoint(build_model(ModelConfig.from_dict(cfg)), tmp_path / "other")
    with pytest.raises(ModelError, match="different model configs"):
        ckpt.average_checkpoints(folder, other, tmp_path / "avg", weight=0.5)


def test_average_weights_script_reports_errors_in_one_line(saved, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("average_weights", Path(__file__).parent.parent / "train" / "average_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _, folder = saved
    assert script.main(["--first", str(folder), "--second", str(tmp_path / "missing"), "--weight", "0.5",
                        "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("average_weights: error:") and "Traceback" not in err

"""VLSegModel: shapes on tiny configs, missing sequences, per-prompt independence, configs/registry."""
from __future__ import annotations

import pytest
import torch

from vlseg.errors import ModelError
from vlseg.model import ModelConfig, build_model, list_models
from vlseg.model.image_encoder import ImageEncoder
from vlseg.text.base import TextEncoder

class HashText(TextEncoder):
    """Deterministic stand-in text encoder (no backbone download, instant)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__(name="hash", dim=dim)
        self.backbone = torch.nn.Linear(dim, dim)

    def tokenize(self, phrases):
        g = [torch.Generator().manual_seed(sum(map(ord, p)) + len(p)) for p in phrases]
        return {"x": torch.stack([torch.randn(self.dim, generator=gi) for gi in g])}

    def _embed(self, x):
        return self.backbone(x)


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(name="t", channels=(4, 8, 16), res_blocks=1, head_scales=2, feature_dim=6,
                prompt_dim=12, head_hidden=(5, 5), text_encoder="hash", patch_size=(16, 16, 16))
    base.update(kw)
    return ModelConfig(**base)


def make(**kw):
    torch.manual_seed(0)
    return build_model(tiny_cfg(**kw), text_encoder=HashText()).eval()


@pytest.mark.parametrize("cfg_kw", [{}, {"head_scales": 1}, {"channels": (4, 8, 16, 16), "head_scales": 3},
                                    {"res_blocks": 0, "head_hidden": (3,)}])
@pytest.mark.parametrize("size", [(16, 16, 16), (8, 16, 24)])
def test_forward_shapes(cfg_kw, size):
    model = make(**cfg_kw)
    div = model.config.size_divisor
    size = tuple(max(div, s // div * div) for s in size)
    x = torch.randn(2, 4, *size)
    present = torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        feats = model.encode_image(x, present)
        assert len(feats) == model.config.head_scales
        assert feats[-1].shape == (2, model.config.feature_dim, *size)  # finest = input size
        out = model(x, present, ["edema", "core", "whole tumor"])
        assert out.shape == (2, 3, *size) and torch.isfinite(out).all()
        per_batch = model.decode(feats, torch.randn(2, 4, model.config.prompt_dim))
        assert per_batch.shape == (2, 4, *size)


def test_image_encoder_is_dimension_generic():
    enc = ImageEncoder(in_channels=8, channels=(4, 8, 16), res_blocks=1, head_scales=2, feature_dim=6,
                       spatial_dims=2)
    feats = enc(torch.randn(1, 8, 16, 24))
    assert [f.shape for f in feats] == [(1, 6, 8, 12), (1, 6, 16, 24)]


@pytest.mark.parametrize("present", [(1, 0, 0, 0), (0, 1, 0, 1), (0, 0, 0, 1), (1, 1, 1, 0)])
def test_missing_sequences_are_ignored_whatever_their_values(present):
    model = make()
    pres = torch.tensor([present], dtype=torch.bool)
    x = torch.randn(1, 4, 16, 16, 16)
    noisy = x.clone()
    noisy[:, ~pres[0]] = torch.randn_like(noisy[:, ~pres[0]]) * 100  # garbage in absent channels
    with torch.no_grad():
        a = model(x, pres, ["edema"])
        b = model(noisy, pres, ["edema"])
        full = model(x, torch.ones(1, 4, dtype=torch.bool), ["edema"])
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, full)  # the indicator channels change the result


def test_each_prompt_is_decoded_independently_and_image_encoded_once():
    model = make()
    calls = []
    model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(1))
    with torch.no_grad():
        feats = model.encode_image(torch.randn(1, 4, 16, 16, 16), torch.ones(1, 4, dtype=torch.bool))
        prompts = model.embed_prompts(["necrotic core", "edema", "enhancing tumor", "whole tumor"])
        together = model.decode(feats, prompts)
        for i in range(4):
            alone = model.decode(feats, prompts[i:i + 1])
            torch.testing.assert_close(alone[:, 0], together[:, i], atol=1e-5, rtol=1e-5)
    assert len(calls) == 1
    assert not torch.allclose(together[:, 0], together[:, 1])  # prompts do condition the output


def test_input_validation():
    model = make()
    ok = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="multiple of 4"):
        model.encode_image(torch.randn(1, 4, 10, 16, 16), ok)
    with pytest.raises(ValueError, match=r"\(B, 4"):
        model.encode_image(torch.randn(1, 3, 16, 16, 16), ok)
    with pytest.raises(ValueError, match="present"):
        model.encode_image(torch.randn(2, 4, 16, 16, 16), ok)


def test_configs_and_registry():
    assert {"tiny", "base"} <= set(list_models())
    with pytest.raises(ModelError, match="unknown model"):
        build_model("no-such-model")
    with pytest.raises(ModelError, match="channels"):
        ModelConfig(name="bad", channels=(8,))
    with pytest.raises(ModelError, match="unknown fields"):
        ModelConfig.from_dict({"name": "x", "chanels": [4, 8]})
    with pytest.raises(ModelError, match="patch_size"):
        ModelConfig(name="bad", channels=(4, 8, 16), patch_size=(30, 32, 32))
    cfg = ModelConfig.from_dict(tiny_cfg().to_dict())
    assert cfg == tiny_cfg() and isinstance(cfg.channels, tuple)
    with pytest.raises(Exception):
        cfg.name = "changed"  # frozen


def test_tiny_preset_size(monkeypatch):
    from vlseg.model.config import load_named_config

    tiny = load_named_config("tiny")
    assert tiny.spacing_mm == 2.0 and tiny.text_encoder == "minilm" and tiny.text_lora_rank > 0
    model = build_model(tiny.replace(text_lora_rank=0), text_encoder=HashText(384))
    assert 1e6 <= model.num_parameters() <= 3e6
    base = load_named_config("base")
    enc = ImageEncoder(in_channels=8, channels=base.channels, res_blocks=base.res_blocks,
                       head_scales=base.head_scales, feature_dim=base.feature_dim)
    assert sum(p.numel() for p in enc.parameters()) > 5 * model.num_parameters()


def test_models_cli_lists_presets(capsys):
    from vlseg.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "base" in out and "2.0mm" in out

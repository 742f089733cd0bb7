"""Text encoders: minilm (real weights), open_clip (tiny random tower), hf (tiny random BERT); cache; LoRA."""
from __future__ import annotations

import json

import pytest
import torch

from vlseg.errors import ModelError
from vlseg.text import build_text_encoder

def make_tiny_bert_dir(path) -> str:
    """A random 2-layer BERT (hidden 32) with the MiniLM tokenizer, saved as a local HF folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from vlseg.text.hf import minilm_dir

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return make_tiny_bert_dir(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm").eval()


@pytest.fixture(scope="module")
def tiny_clip_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.json"
    path.write_text(json.dumps({
        "embed_dim": 24,
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }))
    return str(path)


def test_minilm_matches_sentence_transformers(minilm):
    from vlseg.text.hf import minilm_dir

    phrases = ["necrotic tumor core", "peritumoral edema", "the enhancing part of the tumour"]
    ours = minilm.encode(phrases)
    assert ours.shape == (3, 384) and minilm.dim == 384
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3))
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    expected = torch.as_tensor(ref.encode(phrases, convert_to_numpy=True, normalize_embeddings=True))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_minilm_paraphrases_are_closer_than_other_concepts(minilm):
    e = minilm.encode(["peritumoral edema", "swelling around the tumor edema", "necrotic core"])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])


def test_cache_runs_backbone_once_per_phrase(tiny_bert_dir):
    enc = build_text_encoder(f"hf:{tiny_bert_dir}").eval()
    calls = []
    enc.backbone.register_forward_hook(lambda m, i, o: calls.append(i))
    a = enc.encode(["edema", "edema", "core"])
    assert len(calls) == 1 and enc.backbone_calls == 1
    torch.testing.assert_close(a[0], a[1])
    b = enc.encode(["core", "edema"])
    assert len(calls) == 1  # all cached
    torch.testing.assert_close(b, a[[2, 0]])
    enc.encode(["core", "whole tumor"])
    assert len(calls) == 2  # only the new phrase ran
    # Weights may change: every one of these empties the cache.
    for invalidate in (lambda: enc.train(True).train(False), enc.clear_cache,
                       lambda: enc.load_state_dict(enc.state_dict())):
        n = len(calls)
        invalidate()
        enc.encode(["edema"])
        assert len(calls) == n + 1


def test_training_mode_does_not_cache_and_forward_is_differentiable(tiny_bert_dir):
    enc = build_text_encoder(f"hf:{tiny_bert_dir}").train()
    enc.encode(["edema"])
    enc.encode(["edema"])
    assert enc.backbone_calls == 2 and not enc._cache
    out = enc(**enc.tokenize(["edema", "necrosis"]))
    assert out.requires_grad and out.shape == (2, 32)
    out.sum().backward()
    assert enc.backbone.embeddings.word_embeddings.weight.grad is not None


def test_open_clip_tiny_random_and_weights_file(tiny_clip_json, tmp_path):
    from safetensors.torch import save_file

    enc = build_text_encoder(f"open_clip:{tiny_clip_json}").eval()
    assert enc.dim == 24
    e = enc.encode(["enhancing tumor", "edema"])
    assert e.shape == (2, 24) and torch.isfinite(e).all()
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))
    # Weights from a local file (CLIP layout: text keys at top level) reproduce the outputs.
    weights = tmp_path / "tiny.safetensors"
    state = {k: v.contiguous() for k, v in enc.backbone.state_dict().items() if k != "attn_mask"}
    state["visual.proj"] = torch.zeros(2)  # vision keys are ignored
    save_file(state, str(weights))
    again = build_text_encoder(f"open_clip:{tiny_clip_json}:{weights}").eval()
    torch.testing.assert_close(again.encode(["enhancing tumor", "edema"]), e)


def test_hf_tiny_random(tiny_bert_dir):
    enc = build_text_encoder(f"hf:{tiny_bert_dir}").eval()
    e = enc.encode(["tumor core"])
    assert e.shape == (1, 32) and enc.lora_target_modules == ("query", "value")
    assert enc.encode([]).shape == (0, 32)


@pytest.mark.parametrize("spec", ["", "bert", "hf:/nonexistent/dir", "open_clip:no-such-arch"])
def test_bad_specs_raise_model_error(spec):
    with pytest.raises(ModelError):
        build_text_encoder(spec)


def test_text_lora_trains_only_adapters(tiny_bert_dir):
    from vlseg.model import ModelConfig, build_model

    cfg = ModelConfig(name="t", channels=(4, 8), head_scales=1, feature_dim=4, prompt_dim=8,
                      head_hidden=(4,), text_encoder=f"hf:{tiny_bert_dir}", text_lora_rank=2,
                      patch_size=(16, 16, 16))
    model = build_model(cfg)
    text_trainable = [n for n, p in model.text_encoder.named_parameters() if p.requires_grad]
    assert text_trainable and all("lora_" in n for n in text_trainable)
    before = {n: p.detach().clone() for n, p in model.text_encoder.named_parameters()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    te = model.text_encoder
    for _ in range(2):  # lora_B starts at zero, so lora_A only moves on the second step
        prompts = model.prompt_embeddings_from_text(te(**te.tokenize(["edema", "core"])))
        logits = model(torch.randn(1, 4, 8, 8, 8), torch.ones(1, 4, dtype=torch.bool), prompts)
        logits.square().mean().backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in te.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)

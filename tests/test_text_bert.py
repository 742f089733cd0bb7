"""The plain-torch MiniLM (``minilm``) gives the embeddings transformers gives, LoRA included."""
import torch

from vlseg.text import build_text_encoder
from vlseg.text.bert import BertTextEncoder
from vlseg.text.hf import HFTextEncoder, minilm_dir

PHRASES = ["segment the necrotic core", "edema", "how big is the enhancing tumor?", "",
           "a much longer phrase " * 20]


def test_minilm_matches_transformers():
    ours = build_text_encoder("minilm").eval()
    assert isinstance(ours, BertTextEncoder)
    ref = HFTextEncoder(name="minilm", model_dir=minilm_dir()).eval()
    assert ours.dim == ref.dim == 384
    t_ours, t_ref = ours.tokenize(PHRASES), ref.tokenize(PHRASES)
    for k in ("input_ids", "attention_mask"):
        assert torch.equal(t_ours[k], t_ref[k]), k
    torch.testing.assert_close(ours.encode(PHRASES), ref.encode(PHRASES), rtol=0, atol=1e-5)
    # Same Linear layers by name, so LoRA adapters land on the same modules.
    lin = lambda m: {n for n, x in m.backbone.named_modules() if isinstance(x, torch.nn.Linear)}
    assert lin(ours) == lin(ref)
    assert ours.lora_target_modules == ref.lora_target_modules


def test_bundled_model_prompts_match_transformers_backbone():
    from vlseg.model import load_model
    from vlseg.model.registry import add_text_lora
    from vlseg.text.base import TextEncoder

    model = load_model()
    ref = HFTextEncoder(name="minilm", model_dir=minilm_dir())
    add_text_lora(ref, rank=model.config.text_lora_rank, alpha=model.config.text_lora_alpha)
    lora = {k: v for k, v in model.text_encoder.state_dict().items() if "lora_" in k}
    assert lora
    missing = TextEncoder.load_state_dict(ref, lora, strict=False)
    assert not missing.unexpected_keys
    ref.eval()
    torch.testing.assert_close(model.text_encoder.encode(PHRASES[:3]), ref.encode(PHRASES[:3]),
                               rtol=0, atol=1e-5)


def test_text_lora_has_peft_layout_and_output():
    """vlseg.text.lora wraps the same layers PEFT does, with PEFT's keys and the same output."""
    from peft import LoraConfig, inject_adapter_in_model

    from vlseg.text.lora import inject_lora

    ours = build_text_encoder("minilm").eval()
    ref = build_text_encoder("minilm").eval()
    inject_lora(ours.backbone, ours.lora_target_modules, rank=4, alpha=8)
    ref.backbone = inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(ref.lora_target_modules)),
        ref.backbone)
    assert set(ours.state_dict()) == set(ref.state_dict())
    torch.manual_seed(0)
    state = {k: (torch.randn_like(v) * 0.05 if "lora_" in k else v) for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    torch.testing.assert_close(ours.encode(PHRASES), ref.encode(PHRASES), rtol=0, atol=1e-5)
    assert not torch.allclose(ours.encode(PHRASES[:1]), build_text_encoder("minilm").eval().encode(PHRASES[:1]))

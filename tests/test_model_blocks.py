"""The plain-torch U-Net blocks equal MONAI's: same parameter names, same outputs (so checkpoints
saved with the MONAI blocks load unchanged), and loading a model no longer imports MONAI."""
import subprocess
import sys

import pytest
import torch
from monai.networks.blocks import UnetOutBlock, UnetResBlock

from vlseg.model.blocks import OutBlock, ResBlock

NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


@pytest.mark.parametrize("dims,c_in,c_out,stride", [(3, 4, 8, 1), (3, 8, 8, 1), (3, 8, 16, 2), (2, 3, 3, 2)])
def test_res_block_matches_monai(dims, c_in, c_out, stride):
    torch.manual_seed(0)
    ref = UnetResBlock(dims, c_in, c_out, 3, stride, NORM, ACT).eval()
    ours = ResBlock(dims, c_in, c_out, 3, stride).eval()
    assert set(ref.state_dict()) == set(ours.state_dict())
    with torch.no_grad():  # random affine norms so they matter
        for p in ref.parameters():
            p.copy_(torch.randn_like(p))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, c_in, *([12] * dims))
    with torch.no_grad():
        torch.testing.assert_close(ours(x.clone()), ref(x.clone()), rtol=0, atol=0)


def test_out_block_matches_monai():
    torch.manual_seed(1)
    ref = UnetOutBlock(3, 8, 5).eval()
    ours = OutBlock(3, 8, 5).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 8, 6, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_loading_the_bundled_model_does_not_import_monai():
    code = ("import sys; from vlseg.model import load_model; load_model(); "
            "print('monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"

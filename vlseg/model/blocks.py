"""The U-Net building blocks of the image encoder, in plain torch.

These are MONAI's ``UnetResBlock`` / ``UnetOutBlock`` (``monai.networks.blocks.dynunet_block``)
re-stated with the same arithmetic and the same parameter names (``conv1.conv.weight``,
``norm1.weight``, ...), so every checkpoint and LoRA adapter saved with the MONAI blocks loads
unchanged. Why not import them: ``import monai`` eagerly imports every MONAI sub-package
(apps, bundle, networks.nets, torchvision, torch._dynamo) and was 6-19 s of the 9+ s model load on
these machines. ``tests/test_model_blocks.py`` checks equality with MONAI's blocks, weights and
outputs.
"""
from __future__ import annotations

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def conv_transpose(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose{1,2,3}d`` for ``spatial_dims`` (MONAI's ``Conv[Conv.CONVTRANS, dims]``)."""
    return _CONV_T[spatial_dims]


class ConvUnit(nn.Sequential):
    """A convolution named ``conv`` (+ dropout named ``adn.D``): MONAI's ``Convolution`` layout
    with ``act=None, norm=None``; padding ``(kernel - stride + 1) // 2`` as ``get_padding``."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, *, kernel_size: int, stride: int,
                 bias: bool, dropout: float | None = None) -> None:
        super().__init__()
        padding = max((kernel_size - stride + 1) // 2, 0)
        self.add_module("conv", _CONV[spatial_dims](c_in, c_out, kernel_size, stride=stride,
                                                    padding=padding, bias=bias))
        if dropout:
            self.add_module("adn", nn.Sequential())
            self.adn.add_module("D", nn.Dropout(dropout))


class ResBlock(nn.Module):
    """conv-norm-act-conv-norm + (1x1 conv-norm) residual, then act: MONAI's ``UnetResBlock``
    with instance norm (affine) and leaky ReLU (slope 0.01)."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1,
                 *, dropout: float | None = None, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = ConvUnit(spatial_dims, c_in, c_out, kernel_size=kernel_size, stride=stride,
                              bias=False, dropout=dropout)
        self.conv2 = ConvUnit(spatial_dims, c_out, c_out, kernel_size=kernel_size, stride=1,
                              bias=False, dropout=dropout)
        self.lrelu = nn.LeakyReLU(negative_slope=negative_slope, inplace=True)
        self.norm1 = _INSTANCE_NORM[spatial_dims](c_out, affine=True)
        self.norm2 = _INSTANCE_NORM[spatial_dims](c_out, affine=True)
        if c_in != c_out or stride != 1:
            self.conv3 = ConvUnit(spatial_dims, c_in, c_out, kernel_size=1, stride=stride,
                                  bias=False, dropout=dropout)
            self.norm3 = _INSTANCE_NORM[spatial_dims](c_out, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.lrelu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if hasattr(self, "conv3"):
            residual = self.norm3(self.conv3(residual))
        out += residual
        return self.lrelu(out)


class OutBlock(nn.Module):
    """1x1 convolution with bias: MONAI's ``UnetOutBlock`` (parameters ``conv.conv.*``)."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = ConvUnit(spatial_dims, c_in, c_out, kernel_size=1, stride=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

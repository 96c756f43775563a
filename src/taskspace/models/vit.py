"""The reference small Vision Transformer "ViT4", registered as ``vit4``.

Exactly as the reference: patches of 4x4 -> Linear(C*4*4 -> 256); a CLS token and a learned
position embedding, both initialised N(0, 1); 6 pre-norm blocks with 6 heads x 64
(qkv without bias, output Linear(384 -> 256)) and an MLP 256 -> 256 -> GELU -> 256; the
pre-norms are BatchNorm1d over channels (statistics shared across tokens and batch), not
LayerNorm. Head: CLS -> BatchNorm1d -> Linear. No dropout. 3,186,946 parameters for 2
outputs on 3x32x32 inputs.

Attention is plain einsum + softmax rather than ``scaled_dot_product_attention``: the fused
kernels have no double backward, and discovery differentiates through training.
"""

from __future__ import annotations

import torch
from torch import nn

from taskspace.errors import TaskspaceError
from taskspace.models.classifier import Classifier, check_positive_int
from taskspace.models.registry import register_model

__all__ = ["TokenBatchNorm", "ViTBackbone", "vit4"]


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the channels of ``[B, N, D]`` tokens, statistics over batch and tokens."""

    #: tells the engine's vmap-friendly BatchNorm how to lay the input out
    reduction_layout = "tokens"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every token's ``D`` channels with statistics pooled over ``B * N``."""
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class Attention(nn.Module):
    """Multi-head self-attention written with einsum so double backward works."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim] -> [B, N, dim]``."""
        b, n, _ = x.shape
        q, k, v = (
            t.reshape(b, n, self.heads, self.dim_head) for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        scores = torch.einsum("bihd,bjhd->bhij", q, k) * self.scale
        out = torch.einsum("bhij,bjhd->bihd", scores.softmax(dim=-1), v)
        return self.to_out(out.reshape(b, n, self.heads * self.dim_head))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(bn(x))`` then ``x + mlp(bn(x))``."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = TokenBatchNorm(dim)
        self.attn = Attention(dim, heads, dim_head)
        self.norm2 = TokenBatchNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Both residual sub-blocks."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTBackbone(nn.Module):
    """Patch embedding, CLS + position embedding, blocks, and the BN'd CLS vector."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        num_patches = (image_size // patch_size) ** 2
        self.to_patch = nn.Linear(in_channels * patch_size * patch_size, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, dim_head, mlp_dim) for _ in range(depth)))
        self.norm = nn.BatchNorm1d(dim)
        self.feature_dim = dim

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, (H/p)(W/p), p*p*C]`` (row-major patches, channels last)."""
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm'd CLS token after the last block, ``[B, dim]``."""
        tokens = self.to_patch(self.patches(x))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embedding
        return self.norm(self.blocks(tokens)[:, 0])


@register_model("vit4")
def vit4(
    num_outputs: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 256,
    depth: int = 6,
    heads: int = 6,
    dim_head: int = 64,
    mlp_dim: int = 256,
) -> Classifier:
    """The reference ViT4; overrides shrink it (``dim``, ``depth``, ``heads``...) for tests."""
    patch_size = check_positive_int(patch_size, "vit4 patch_size")
    dim = check_positive_int(dim, "vit4 dim")
    depth = check_positive_int(depth, "vit4 depth")
    heads = check_positive_int(heads, "vit4 heads")
    dim_head = check_positive_int(dim_head, "vit4 dim_head")
    mlp_dim = check_positive_int(mlp_dim, "vit4 mlp_dim")
    if image_size % patch_size:
        raise TaskspaceError(
            f"vit4: patch_size {patch_size} does not divide image_size {image_size}; "
            f"pass patch_size= a divisor of {image_size}"
        )
    backbone = ViTBackbone(
        in_channels, image_size, patch_size, dim, depth, heads, dim_head, mlp_dim
    )
    return Classifier(
        backbone,
        dim,
        num_outputs,
        in_channels=in_channels,
        image_size=image_size,
        fixed_size=True,
    )

"""The task encoder and its fixed orthonormal heads (reference ``models/td_encoder.py``).

A task encoder maps images to ``h = BN0(P g(x))``: ``g`` is a backbone of the learner's
family, ``P`` a bias-free linear projection to ``d`` dimensions and ``BN0`` a BatchNorm1d
whose shift is frozen at zero (only its scale is trained). ``K <= d`` fixed, untrained
heads ``w_k`` (rows of a Haar-random orthogonal matrix) turn ``h`` into ``K`` task scores
``s_k(x) = w_k . h(x)``; task ``k`` labels ``x`` by the sign of ``s_k``.

Why this shape: all tasks share one encoder (amortised discovery), the zero-mean ``h`` and
hyperplanes through the origin keep every task near 50/50 without a balance loss, and
orthogonal heads on a uniformly spread ``h`` give decorrelated tasks.

Sign convention: ``taskspace`` labels are ``1[s > 0]`` (``flip=True`` gives ``1[s <= 0]``).
The reference trains with ``argmax [s, -s]`` (class 0 <=> s > 0); the two conventions are
equal in distribution over learner initialisations, not for fixed ones (see
:func:`soft_labels`), and exported label orientation differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import nn

from taskspace.errors import TaskspaceError
from taskspace.models import create_model

__all__ = ["TaskEncoder", "haar_orthogonal", "load_backbone_weights", "soft_labels"]


def haar_orthogonal(d: int, seed: int = 0) -> torch.Tensor:
    """A Haar-random ``d x d`` orthogonal matrix (QR of a Gaussian with the sign fix).

    Deterministic for a seed (its own CPU generator). The reference draws it with numpy's
    Householder construction at seed 0; the distribution is the same, the numbers are not.
    """
    if d < 1:
        raise TaskspaceError(f"encoder dimension d must be >= 1, got {d}")
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
    q = q * sign  # column j times sign(r_jj): makes the QR factor Haar-distributed
    return q.float()


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a plain state dict (``.safetensors`` or a weights-only ``torch.save`` file).

    Keys may carry a ``backbone.`` or ``encoder.`` prefix; classifier keys (``fc.``,
    ``head.``, ``linear.``) are ignored, as in the reference's SSL loading where only the
    classifier may be missing. Any other missing or unexpected key is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskspaceError(f"backbone checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unreadable file is a user error)
        raise TaskspaceError(f"cannot read backbone checkpoint {path}: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TaskspaceError(f"backbone checkpoint {path} must hold a state dict")
    clean: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone.", "encoder."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if k.split(".")[0] in ("fc", "head", "linear", "classifier"):
            continue
        clean[k] = v
    result = backbone.load_state_dict(clean, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise TaskspaceError(
            f"backbone checkpoint {path} does not match the backbone: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


class TaskEncoder(nn.Module):
    """``h(x) = BN0(P g(x))`` plus ``K`` fixed orthonormal heads ``W [K, d]``.

    Args:
        arch: backbone architecture (any :func:`taskspace.models.create_model` name).
        in_channels, image_size: input shape of the images.
        dim: ``d``, the size of ``h``.
        num_tasks: ``K <= d`` heads.
        proj: ``linear`` (reference default) or ``mlp`` (Linear -> BN -> ReLU first).
        head_seed: seed of the Haar-random head matrix.
        freeze_backbone: keep ``g`` fixed and in eval mode (regulated discovery: only ``P``
            and the BN scale are meta-trained).
        normalize_input: False feeds raw ``[0, 1]`` pixels (the reference's ``--no_normalize``
            for SSL backbones); the caller decides which pixels to pass, this is recorded.
        model_kwargs: architecture overrides for the backbone.
    """

    heads: torch.Tensor  # a buffer: ``W [K, d]``

    def __init__(
        self,
        arch: str,
        *,
        in_channels: int,
        image_size: int,
        dim: int = 32,
        num_tasks: int = 32,
        proj: Literal["linear", "mlp"] = "linear",
        head_seed: int = 0,
        freeze_backbone: bool = False,
        normalize_input: bool = True,
        model_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise TaskspaceError(f"encoder dim must be >= 1, got {dim}")
        if not 1 <= num_tasks <= dim:
            raise TaskspaceError(
                f"num_tasks must be between 1 and dim={dim} (orthogonal heads), got {num_tasks}"
            )
        if proj not in ("linear", "mlp"):
            raise TaskspaceError(f"proj must be 'linear' or 'mlp', got {proj!r}")
        model = create_model(
            arch, 1, in_channels=in_channels, image_size=image_size, **(model_kwargs or {})
        )
        self.arch = arch
        self.backbone = model.backbone
        feat = int(model.feature_dim)
        layers: list[nn.Module] = []
        if proj == "mlp":
            layers += [nn.Linear(feat, feat, bias=False), nn.BatchNorm1d(feat), nn.ReLU()]
        layers.append(nn.Linear(feat, dim, bias=False))
        self.proj = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(dim)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)  # BN0: the shift stays at zero
        self.register_buffer("heads", haar_orthogonal(dim, head_seed)[:num_tasks].clone())
        self.dim, self.num_tasks, self.feature_dim = int(dim), int(num_tasks), feat
        self.freeze_backbone = bool(freeze_backbone)
        self.normalize_input = bool(normalize_input)
        if self.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> TaskEncoder:
        """Set train/eval mode (a frozen backbone always stays in eval mode).

        Fixes the reference bug where the encoder ignored ``mode`` and never left train mode.
        """
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``h [B, d]`` of float images ``[B, C, H, W]``."""
        if self.freeze_backbone:
            with torch.no_grad():
                feats = self.backbone(x)
        else:
            feats = self.backbone(x)
        return self.bn(self.proj(feats))

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Task scores ``s = h W^T``: ``[B, K]``."""
        return h @ self.heads.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``h [B, d]`` (same as :meth:`embed`): the unroll calls the encoder functionally
        and needs ``h`` itself (for the uniformity loss) as well as the scores."""
        return self.embed(x)

    def task_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Task scores ``[B, K]`` of float images."""
        return self.scores(self.embed(x))

    def meta_parameters(self) -> list[nn.Parameter]:
        """The parameters the outer optimiser trains (BN shift and a frozen backbone excluded)."""
        return [p for p in self.parameters() if p.requires_grad]


def soft_labels(s: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft two-class labels ``softmax(T [-s, s])``: class 1 <=> ``s > 0`` (``[..., 2]``).

    The reference uses ``softmax(T [s, -s])`` (class 0 <=> s > 0): the same labels with the
    two classes swapped. Swapping the classes is the same as swapping the two rows of every
    learner's output layer (the agreement loss is symmetric in the classes), and those rows
    are drawn i.i.d., so the two conventions give the same meta-loss and meta-gradient only
    in distribution over learner initialisations. For fixed initialisations (the reference's
    one stored pair, ``fixed_inits``) they train different learners and give a different
    meta-loss and meta-gradient.
    """
    return torch.softmax(temperature * torch.stack([-s, s], dim=-1), dim=-1)

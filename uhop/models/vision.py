r"""Image classifiers with Hopfield layers (App F.4 of the paper).

* :class:`HopfieldClassifier` (CIFAR-10 / CIFAR-100): the image is cut into patches by a convolution
  (kernel = stride = ``patch_size``), a learned position embedding is added, and **one** Hopfield layer
  retrieves with a learned CLS token as the state (query) pattern and the patch tokens as stored patterns
  and pattern projections; ``LayerNorm(ReLU(.))`` and a linear head give the logits.
* :class:`HopfieldViT` (Tiny ImageNet): a 3-block pre-LayerNorm ViT whose self-attention is a Hopfield
  layer (every token, CLS included, is state and stored pattern), MLP ratio 4; the head reads the CLS token.

The four variants of Table 1 differ only in the Hopfield layers:

=====================  ===========  =========================================
variant                separation   kernel
=====================  ===========  =========================================
``mhm``                softmax      dot product
``mhm_uhop``           softmax      U-Hop ``Phi`` (trained with Algorithm 2)
``sparse``             sparsemax    dot product
``sparse_uhop``        sparsemax    U-Hop ``Phi`` (trained with Algorithm 2)
=====================  ===========  =========================================

``Phi`` starts at the identity and consumes no random numbers, so a model with and without U-Hop built
from the same seed starts from identical weights (the comparison isolates U-Hop).
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_int
from ..nn.dropout import Dropout
from ..nn.layers import Hopfield

__all__ = ["VARIANTS", "VARIANT_LABELS", "PatchEmbedding", "HopfieldClassifier", "HopfieldViT", "build_model",
           "variant_settings"]

#: variant -> (separation, U-Hop kernel on?)
VARIANTS = {
    "mhm": ("softmax", False),
    "mhm_uhop": ("softmax", True),
    "sparse": ("sparsemax", False),
    "sparse_uhop": ("sparsemax", True),
}
#: Table 1 row labels.
VARIANT_LABELS = {"mhm": "MHM", "mhm_uhop": "MHM + U-Hop", "sparse": "Sparse MHM",
                  "sparse_uhop": "Sparse MHM + U-Hop"}


def variant_settings(variant: str) -> tuple[str, bool]:
    """``(separation, uhop)`` of a variant name."""
    return VARIANTS[check_choice(variant, "variant", VARIANTS)]


class PatchEmbedding(nn.Module):
    """Non-overlapping patches -> tokens ``(B, N, dim)`` plus a learned position embedding."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        image_size = check_int(image_size, "image_size", minimum=1)
        patch_size = check_int(patch_size, "patch_size", minimum=1)
        if patch_size > image_size or image_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide the image size ({image_size}); "
                             f"valid patch sizes: {[p for p in range(1, image_size + 1) if image_size % p == 0]}")
        self.num_patches = (image_size // patch_size) ** 2
        self.image_size, self.patch_size = image_size, patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x):
        if x.ndim != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"images must be (B, C, {self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos


def _hopfield(dim, num_heads, separation, uhop, dropout, d_phi, kernel_normalize_rows, normalize):
    # Explicit sizes (per head, as in hflayers) and init="pytorch": the layers these models were trained with
    # (dim-dimensional association and value spaces split over the heads, nn.Linear's initialisation).
    dim, num_heads = check_int(dim, "dim", minimum=1), check_int(num_heads, "num_heads", minimum=1)
    if dim % num_heads:
        raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
    return Hopfield(dim, hidden_size=dim // num_heads, output_size=dim, pattern_size=dim // num_heads,
                    num_heads=num_heads, separation=separation, dropout=dropout,
                    kernel="linear" if uhop else None, d_phi=d_phi if uhop else None,
                    kernel_normalize_rows=kernel_normalize_rows, normalize_stored_pattern=normalize,
                    normalize_state_pattern=normalize, normalize_pattern_projection=normalize, init="pytorch")


class HopfieldClassifier(nn.Module):
    r"""CLS-query Hopfield classifier of App F.4 (CIFAR).

    Args:
        image_size, in_channels, num_classes: data shape.
        patch_size: must divide ``image_size``; the paper's 32 on 32x32 CIFAR gives a single patch token
            (the layer then retrieves from one memory, and softmax = sparsemax = 1).
        dim: embedding dimension (512 in Table 5).
        num_heads: Hopfield heads (1 in the official code).
        separation, uhop: the variant (see :data:`VARIANTS`); ``variant=`` sets both.
        attn_dropout: dropout on the association weights (0.1 in the official code).
        d_phi, kernel_normalize_rows: U-Hop feature map options.
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_channels: int = 3, num_classes: int = 10,
                 dim: int = 64, num_heads: int = 1, separation: str = "softmax", uhop: bool = False,
                 attn_dropout: float = 0.1, d_phi: int | None = None, kernel_normalize_rows: bool = False,
                 variant: str | None = None):
        super().__init__()
        if variant is not None:
            separation, uhop = variant_settings(variant)
        self.embed = PatchEmbedding(image_size, patch_size, in_channels, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.hopfield = _hopfield(dim, num_heads, separation, uhop, attn_dropout, d_phi, kernel_normalize_rows, True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @property
    def num_memories(self) -> int:
        return self.embed.num_patches

    def forward(self, x):
        patches = self.embed(x)                                        # stored patterns = pattern projections
        query = self.cls.expand(x.shape[0], -1, -1)                    # state pattern: the CLS token
        out = self.hopfield((patches, query, patches))[:, 0]
        return self.head(self.norm(out.relu()))


class _Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, dropout, separation, uhop, attn_dropout, d_phi,
                 kernel_normalize_rows):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.hopfield = _hopfield(dim, num_heads, separation, uhop, attn_dropout, d_phi, kernel_normalize_rows,
                                  False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), Dropout(dropout),
                                 nn.Linear(mlp_ratio * dim, dim), Dropout(dropout))

    def forward(self, x):
        x = x + self.hopfield(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HopfieldViT(nn.Module):
    """ViT backbone with Hopfield self-association blocks (App F.4, Tiny ImageNet: 3 blocks)."""

    def __init__(self, image_size: int = 64, patch_size: int = 16, in_channels: int = 3, num_classes: int = 200,
                 dim: int = 64, depth: int = 3, num_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.1,
                 separation: str = "softmax", uhop: bool = False, attn_dropout: float = 0.1,
                 d_phi: int | None = None, kernel_normalize_rows: bool = False, variant: str | None = None):
        super().__init__()
        if variant is not None:
            separation, uhop = variant_settings(variant)
        check_int(depth, "depth", minimum=1)
        self.embed = PatchEmbedding(image_size, patch_size, in_channels, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList([_Block(dim, num_heads, mlp_ratio, dropout, separation, uhop, attn_dropout,
                                            d_phi, kernel_normalize_rows) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @property
    def num_memories(self) -> int:
        return self.embed.num_patches + 1

    def forward(self, x):
        tokens = self.embed(x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def build_model(dataset: str, variant: str, *, image_size: int, num_classes: int, patch_size: int, dim: int,
                num_heads: int = 1, depth: int = 3, attn_dropout: float = 0.1, dropout: float = 0.1,
                d_phi: int | None = None, kernel_normalize_rows: bool = False, architecture: str = "auto"
                ) -> nn.Module:
    """The model of App F.4 for ``dataset``: the one-layer CLS classifier for CIFAR, the 3-block ViT for
    Tiny ImageNet (``architecture="classifier"`` / ``"vit"`` overrides)."""
    architecture = check_choice(architecture, "architecture", ("auto", "classifier", "vit"))
    if architecture == "auto":
        architecture = "vit" if dataset == "tiny_imagenet" else "classifier"
    if architecture == "vit":
        return HopfieldViT(image_size, patch_size, 3, num_classes, dim, depth, num_heads, dropout=dropout,
                           attn_dropout=attn_dropout, d_phi=d_phi, kernel_normalize_rows=kernel_normalize_rows,
                           variant=variant)
    return HopfieldClassifier(image_size, patch_size, 3, num_classes, dim, num_heads, attn_dropout=attn_dropout,
                              d_phi=d_phi, kernel_normalize_rows=kernel_normalize_rows, variant=variant)

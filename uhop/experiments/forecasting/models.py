"""The forecasters: STanHop-Net (with or without U-Hop) and the two baselines that need no Hopfield layer."""

from __future__ import annotations

import torch
from torch import nn

from ..._checks import check_int
from ...models.stanhop import STanHopNet
from .config import ForecastConfig

__all__ = ["Persistence", "LinearForecaster", "build_model"]


class Persistence(nn.Module):
    """Repeat the last observed row over the horizon: ``(B, L, C)`` -> ``(B, horizon, C)``."""

    def __init__(self, horizon: int):
        super().__init__()
        self.horizon = check_int(horizon, "horizon", minimum=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:, :].expand(-1, self.horizon, -1)


class LinearForecaster(nn.Module):
    """One ``Linear(input_len -> horizon)`` along time, shared by all channels (DLinear's "Linear",
    ``individual=False``): ``(B, L, C)`` -> ``(B, horizon, C)``."""

    def __init__(self, input_len: int, horizon: int):
        super().__init__()
        self.linear = nn.Linear(check_int(input_len, "input_len", minimum=1), check_int(horizon, "horizon", minimum=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


def build_model(config: ForecastConfig, n_vars: int) -> nn.Module:
    """The network of ``config.variant`` for ``n_vars`` channels (seeded by the caller)."""
    if config.variant == "persistence":
        return Persistence(config.horizon)
    if config.variant == "linear":
        return LinearForecaster(config.input_len, config.horizon)
    return STanHopNet(n_vars, config.input_len, config.horizon, n_blocks=config.n_blocks, seg_len=config.seg_len,
                      win_size=config.win_size, d_model=config.d_model, n_heads=config.n_heads, d_ff=config.d_ff,
                      factor=config.factor, dropout=config.dropout, alpha_init=config.alpha_init,
                      uhop=config.variant == "stanhop_uhop")

"""Loading weights trained with ``hflayers`` (Ramsauer et al., 2021) into the :mod:`uhop.nn` layers.

``hflayers`` keeps its projections inside an ``association_core`` (one stacked ``in_proj_weight`` when every
input has the model size and no ``pattern_size`` is set, else ``q/k/v_proj_weight``; one stacked
``in_proj_bias``), names its LayerNorms ``norm_stored_pattern`` / ``norm_state_pattern`` /
``norm_pattern_projection``, and stores learned patterns sequence-first when ``batch_first=False``.
:func:`load_hflayers_state_dict` translates those names and layouts; everything else about a layer is fixed by
building the :mod:`uhop.nn` layer with the same constructor arguments.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import torch
from torch import nn

from .layers import Hopfield, HopfieldLayer, HopfieldPooling

__all__ = ["load_hflayers_state_dict"]

_NORMS = {"norm_stored_pattern": "norm_stored", "norm_state_pattern": "norm_state",
          "norm_pattern_projection": "norm_projection"}
# Parameters hflayers has no counterpart for: they keep the module's current values.
_OURS_ONLY = ("feature_map.", "separation.")


def _split_rows(tensor: torch.Tensor, key: str, parts: list[tuple[str, int]], extra_ok: bool = False) -> dict:
    total = sum(n for _, n in parts)
    if tensor.shape[0] != total and not (extra_ok and tensor.shape[0] > total):
        layout = " + ".join(f"{name} {n}" for name, n in parts) or "nothing"
        raise ValueError(f"{key} has {tensor.shape[0]} rows but the uhop.nn layer expects {layout} = {total}: build "
                         f"it with the hflayers layer's arguments (hidden_size and pattern_size are per head)")
    out, start = {}, 0
    for name, n in parts:
        out[name] = tensor[start:start + n]
        start += n
    return out


def _translate_hopfield(layer: Hopfield, prefix: str, source: dict, target: dict, used: set) -> None:
    core = prefix + "association_core."
    H, hd, dv = layer.num_heads, layer.hidden_size, layer.pattern_size
    projections = [(name, rows) for name, lin, rows in (("q_proj", layer.q_proj, H * hd), ("k_proj", layer.k_proj,
                                                                                            H * hd),
                                                        ("v_proj", layer.v_proj, H * dv)) if lin is not None]
    if core + "in_proj_weight" in source:
        used.add(core + "in_proj_weight")
        for name, w in _split_rows(source[core + "in_proj_weight"], core + "in_proj_weight", projections).items():
            target[f"{prefix}{name}.weight"] = w
    for name in ("q", "k", "v"):
        key = f"{core}{name}_proj_weight"
        if key in source:
            used.add(key)
            target[f"{prefix}{name}_proj.weight"] = source[key]
    if core + "in_proj_bias" in source:
        used.add(core + "in_proj_bias")
        # hflayers always reserves the value bias, also when the values are static (then it is unused).
        for name, b in _split_rows(source[core + "in_proj_bias"], core + "in_proj_bias", projections,
                                   extra_ok=layer.v_proj is None).items():
            target[f"{prefix}{name}.bias"] = b
    for part in ("weight", "bias"):
        if f"{core}out_proj.{part}" in source:
            used.add(f"{core}out_proj.{part}")
            target[f"{prefix}out_proj.{part}"] = source[f"{core}out_proj.{part}"]
        if f"{core}p_norm_{part}" in source:
            used.add(f"{core}p_norm_{part}")
            target[f"{prefix}norm_hopfield_space.{part}"] = source[f"{core}p_norm_{part}"]
    bias_keys = [core + "bias_k", core + "bias_v"]
    if any(k in source for k in bias_keys):
        used.update(k for k in bias_keys if k in source)
        if layer.key_bias_pattern is None:
            warnings.warn(f"{prefix or 'the layer'}: skipping hflayers' bias_k / bias_v: hflayers creates them for "
                          f"concat_bias_pattern=True but never appends them, so the uhop.nn layer built without "
                          f"concat_bias_pattern computes what the hflayers layer computed", UserWarning,
                          stacklevel=3)
        else:
            warnings.warn(f"{prefix or 'the layer'}: loading hflayers' bias_k / bias_v into the bias patterns; "
                          f"hflayers never used them, so the outputs differ from the hflayers layer (build with "
                          f"concat_bias_pattern=False to reproduce it)", UserWarning, stacklevel=3)
            for key, name, size in ((core + "bias_k", "key_bias_pattern", hd), (core + "bias_v",
                                                                                 "value_bias_pattern", dv)):
                if key in source:
                    t = source[key]
                    if t.numel() != H * size:
                        raise ValueError(f"{key} has {t.numel()} entries, the uhop.nn layer's {name} needs "
                                         f"num_heads * {size} = {H * size}")
                    target[prefix + name] = t.reshape(H, 1, size)
    for theirs, ours in _NORMS.items():
        for part in ("weight", "bias"):
            key = f"{prefix}{theirs}.{part}"
            if key in source:
                used.add(key)
                target[f"{prefix}{ours}.{part}"] = source[key]


def _translate_learned(wrapper: nn.Module, prefix: str, source: dict, target: dict, used: set) -> None:
    names = ["pooling_weights"] if isinstance(wrapper, HopfieldPooling) else ["lookup_weights", "target_weights"]
    for name in names:
        key = prefix + name
        if key in source:
            used.add(key)
            t = source[key]
            # hflayers: (1, quantity, d) batch-first, (quantity, 1, d) otherwise; uhop.nn: always (1, quantity, d).
            target[key] = t if wrapper.hopfield.batch_first else t.transpose(0, 1)


def load_hflayers_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
    """Load ``state_dict``, saved from ``hflayers`` layers, into ``module``.

    ``module`` is a :class:`Hopfield`, :class:`HopfieldPooling` or :class:`HopfieldLayer` built with the same
    arguments as the hflayers layer, or any model in which hflayers layers were replaced by those (same
    attribute names): keys of the other modules are passed through unchanged.  Parameters hflayers has no
    counterpart for -- a U-Hop feature map, a learnable alpha -- keep their current values (so an hflayers model
    can be ported and then kernelized).  ``strict`` as in :meth:`torch.nn.Module.load_state_dict`; a projection
    whose size does not match raises a ``ValueError`` that says which argument to check.  Returns what
    ``load_state_dict`` returns.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    source = dict(state_dict)
    target: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    layers = [(p, m) for p, m in module.named_modules() if isinstance(m, (Hopfield, HopfieldPooling, HopfieldLayer))]
    if not layers:
        raise ValueError("module holds no uhop.nn Hopfield / HopfieldPooling / HopfieldLayer to load into")
    for name, m in layers:
        prefix = f"{name}." if name else ""
        if isinstance(m, Hopfield):
            _translate_hopfield(m, prefix, source, target, used)
        else:
            _translate_learned(m, prefix, source, target, used)
    hopfield_prefixes = [f"{name}." if name else "" for name, m in layers if isinstance(m, Hopfield)]
    for key, value in source.items():
        if key not in used:
            target[key] = value  # other modules' keys; an unknown key of a Hopfield layer stays unexpected
    own = module.state_dict()
    for key, value in own.items():
        if key not in target and any(key.startswith(p + ours) for p in hopfield_prefixes for ours in _OURS_ONLY):
            target[key] = value
    return module.load_state_dict(target, strict=strict)

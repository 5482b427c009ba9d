"""uhop.nn against hflayers (hopfield-layers, Ramsauer et al., 2021) as an oracle: built with the same arguments and
the same weights (loaded with ``load_hflayers_state_dict``), both give the same outputs, association matrices and
input gradients in float64.  hflayers lives in ``../shared/peers/hopfield-layers`` and is imported, never copied.
Configurations that hit an hflayers defect (listed in uhop/nn/layers.py) are compared where hflayers is right (batch
size 1 for shared static patterns across heads) or assert our documented behaviour instead."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import pytest
import torch

import uhop.nn as unn

_PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "hopfield-layers"
if not _PEER.is_dir():  # a worktree next to the main checkout, or the checkout itself
    _PEER = Path("/work/shared/peers/hopfield-layers")
if not (_PEER / "hflayers").is_dir():
    pytest.skip(f"hflayers is not at {_PEER} (the test oracle of tests/test_hflayers_parity.py)",
                allow_module_level=True)
sys.path.insert(0, str(_PEER))
import hflayers  # noqa: E402
from hflayers.transformer import HopfieldEncoderLayer  # noqa: E402

torch.set_num_threads(1)
DT = torch.float64
B, Q, M = 3, 4, 6

# (id, keyword arguments of hflayers.Hopfield, forward extras)
OFF = dict(normalize_stored_pattern=False, normalize_stored_pattern_affine=False, normalize_state_pattern=False,
           normalize_state_pattern_affine=False, normalize_pattern_projection=False,
           normalize_pattern_projection_affine=False)
HOPFIELD = [
    ("default", dict(input_size=8), {}),
    ("heads-2", dict(input_size=8, num_heads=2), {}),
    ("hidden-per-head", dict(input_size=8, hidden_size=8, num_heads=8), {}),
    ("sizes", dict(input_size=8, hidden_size=5, pattern_size=3, num_heads=2, output_size=6), {}),
    ("input-sizes", dict(input_size=8, stored_pattern_size=6, pattern_projection_size=5, num_heads=2), {}),
    ("scaling", dict(input_size=8, num_heads=2, scaling=0.7), {}),
    ("steps-3", dict(input_size=8, num_heads=2, update_steps_max=3, scaling=2.0), {}),
    ("steps-until-converged", dict(input_size=8, num_heads=2, update_steps_max=None, scaling=3.0), {}),
    ("steps-per-head", dict(input_size=8, num_heads=2, update_steps_max=torch.tensor([1, 4]), scaling=2.0), {}),
    ("eps-per-head", dict(input_size=8, num_heads=2, update_steps_max=6, scaling=2.0,
                          update_steps_eps=torch.tensor([0.3, 1e-9], dtype=DT)), {}),  # heads stop after 3 and 6
    ("no-norms", dict(input_size=8, num_heads=2, **OFF), {}),
    ("norm-no-affine", dict(input_size=8, normalize_stored_pattern_affine=False,
                            normalize_pattern_projection_affine=False), {}),
    ("norm-eps", dict(input_size=8, normalize_state_pattern_eps=0.5, normalize_stored_pattern_eps=1e-2), {}),
    ("hopfield-space-norm", dict(input_size=8, num_heads=2, normalize_hopfield_space=True), {}),
    ("hopfield-space-affine", dict(input_size=8, num_heads=2, hidden_size=4, normalize_hopfield_space=True,
                                   normalize_hopfield_space_affine=True, update_steps_max=2), {}),
    ("static-stored", dict(input_size=8, stored_pattern_as_static=True), {}),
    ("static-state", dict(input_size=8, state_pattern_as_static=True), {}),
    ("static-projection", dict(input_size=8, pattern_projection_as_static=True, disable_out_projection=True), {}),
    ("static-all", dict(input_size=8, stored_pattern_as_static=True, state_pattern_as_static=True,
                        pattern_projection_as_static=True, disable_out_projection=True, update_steps_max=2, **OFF),
     {}),
    ("static-state-heads-2", dict(input_size=4, hidden_size=4, num_heads=2, state_pattern_as_static=True,
                                  stored_pattern_size=8, pattern_projection_size=8), {"batch": 1}),
    ("connected", dict(input_size=8, num_heads=2, pattern_projection_as_connected=True), {}),
    ("connected-static-values", dict(input_size=8, num_heads=2, pattern_projection_as_connected=True,
                                     pattern_projection_as_static=True, disable_out_projection=True), {}),
    ("activation", dict(input_size=8, association_activation="tanh"), {}),
    ("zero-association", dict(input_size=8, num_heads=2, add_zero_association=True, update_steps_max=2), {}),
    ("no-bias", dict(input_size=8, num_heads=2, input_bias=False), {}),
    ("no-out-projection", dict(input_size=8, num_heads=2, pattern_size=3, disable_out_projection=True), {}),
    ("sequence-first", dict(input_size=8, num_heads=2, batch_first=False), {}),
    ("padding-mask", dict(input_size=8, num_heads=2), {"padding": True}),
    ("causal-bool-mask", dict(input_size=8, num_heads=2), {"self": True, "mask": "causal"}),
    ("additive-float-mask", dict(input_size=8, num_heads=2), {"self": True, "mask": "additive"}),
    ("float-mask-neg-inf", dict(input_size=8), {"self": True, "mask": "neg-inf"}),
    ("3d-float-mask", dict(input_size=8, num_heads=2), {"mask": "3d-float"}),
    ("3d-bool-mask-steps", dict(input_size=8, num_heads=2, update_steps_max=2, scaling=2.0),
     {"mask": "3d-bool", "padding": True}),
]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    # hflayers' init (N(0, 0.02^2), zero biases, unit LayerNorms) makes weak tests: draw every parameter instead.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _inputs(kwargs, extras, seed=1):
    g = torch.Generator().manual_seed(seed)
    b = extras.get("batch", B)
    d_in = kwargs["input_size"]
    d_stored = kwargs.get("stored_pattern_size") or d_in
    d_proj = kwargs.get("pattern_projection_size") or d_in
    q = M if extras.get("self") else Q
    state = torch.randn(b, q, d_in, generator=g, dtype=DT)
    stored = torch.randn(b, M, d_stored, generator=g, dtype=DT)
    proj = torch.randn(b, M, d_proj, generator=g, dtype=DT)
    heads = kwargs.get("num_heads", 1)
    masks = {}
    if extras.get("padding"):
        pad = torch.zeros(b, M, dtype=torch.bool)
        pad[0, -2:] = True
        pad[-1, 0] = True
        masks["stored_pattern_padding_mask"] = pad
    kind = extras.get("mask")
    i, j = torch.arange(q)[:, None], torch.arange(M)[None, :]
    if kind == "causal":
        masks["association_mask"] = j > i
    elif kind == "additive":
        masks["association_mask"] = (-0.3 * (i - j).abs()).to(DT)
    elif kind == "neg-inf":
        masks["association_mask"] = torch.where(j > i + 1, float("-inf"), 0.1 * j).to(DT)
    elif kind == "3d-float":
        masks["association_mask"] = torch.randn(b * heads, q, M, generator=g, dtype=DT)
    elif kind == "3d-bool":
        m = torch.rand(b * heads, q, M, generator=g) < 0.3
        m[..., 2] = False  # never a fully masked row
        masks["association_mask"] = m
    if kwargs.get("batch_first", True) is False:
        state, stored, proj = (x.transpose(0, 1) for x in (state, stored, proj))
    return (stored, state, proj), masks


def _pair(name, kwargs, seed=0):
    torch.manual_seed(seed)
    theirs = getattr(hflayers, name)(**kwargs).to(DT).eval()
    _randomise(theirs, seed + 10)
    ours_kwargs = {k: (v.tolist() if isinstance(v, torch.Tensor) and k == "update_steps_eps" else v)
                   for k, v in kwargs.items()}
    ours = getattr(unn, name)(**ours_kwargs).to(DT).eval()
    unn.load_hflayers_state_dict(ours, theirs.state_dict())
    return theirs, ours


def _grads(module, inputs, masks, weights):
    xs = tuple(x.detach().clone().requires_grad_(True) for x in inputs)
    out = module(xs if len(xs) > 1 else xs[0], **masks)
    (out * weights).sum().backward()
    return out.detach(), [x.grad for x in xs]


@pytest.mark.parametrize("kwargs, extras", [c[1:] for c in HOPFIELD], ids=[c[0] for c in HOPFIELD])
def test_hopfield_matches_hflayers(kwargs, extras):
    theirs, ours = _pair("Hopfield", kwargs)
    # hflayers reserves a value bias in in_proj_bias also when the values are static (never used)
    core = theirs.association_core
    unused = core.num_heads * core.pattern_dim if (core.value_as_static and core.in_proj_bias is not None) else 0
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) - unused
    inputs, masks = _inputs(kwargs, extras)
    ref = theirs(inputs, **masks)
    assert torch.isfinite(ref).all()
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5), dtype=DT)
    ref, ref_grads = _grads(theirs, inputs, masks, w)
    out, grads = _grads(ours, inputs, masks, w)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours.get_association_matrix(inputs, **masks).detach(),
                               theirs.get_association_matrix(inputs, **masks), rtol=1e-10, atol=1e-12)
    for prop in ("input_size", "stored_pattern_dim", "state_pattern_dim", "pattern_projection_dim", "hidden_size",
                 "pattern_size", "batch_first", "stored_pattern_as_static", "state_pattern_as_static",
                 "pattern_projection_as_static", "normalize_stored_pattern", "normalize_state_pattern_affine"):
        if not kwargs.get("state_pattern_as_static") or not kwargs.get("stored_pattern_as_static"):
            assert getattr(ours, prop) == getattr(theirs, prop), prop   # hflayers: None in the all-static case


POOLING = [
    ("default", dict(input_size=8, quantity=3), {}),
    ("heads-sizes", dict(input_size=8, hidden_size=3, pattern_size=2, num_heads=2, quantity=2, output_size=5), {}),
    ("tuple-input", dict(input_size=8, num_heads=2, quantity=2, pattern_projection_size=5), {"tuple": True}),
    ("steps-mask", dict(input_size=8, num_heads=2, quantity=2, update_steps_max=3, scaling=2.0), {"padding": True}),
    ("sequence-first", dict(input_size=8, num_heads=2, quantity=3, batch_first=False), {}),
]


@pytest.mark.parametrize("kwargs, extras", [c[1:] for c in POOLING], ids=[c[0] for c in POOLING])
def test_pooling_matches_hflayers(kwargs, extras):
    theirs, ours = _pair("HopfieldPooling", kwargs)
    (stored, _, proj), masks = _inputs(kwargs, extras)
    x = (stored, proj) if extras.get("tuple") else stored
    ref = theirs(x, **masks)
    if kwargs.get("batch_first", True) is False:
        # hflayers flattens (quantity, B, out) across the batch (a defect); uhop.nn returns (B, quantity * out)
        ref = ref.view(kwargs["quantity"], stored.shape[1], -1).transpose(0, 1).reshape(stored.shape[1], -1)
    torch.testing.assert_close(ours(x, **masks), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.get_association_matrix(x, **masks).detach(),
                               theirs.get_association_matrix(x, **masks), rtol=1e-10, atol=1e-12)
    assert (ours.quantity, ours.output_size, ours.state_pattern_dim) == (theirs.quantity, theirs.output_size,
                                                                         theirs.state_pattern_dim)


LOOKUP = [
    ("default", dict(input_size=8, quantity=5), {}),
    ("separated", dict(input_size=8, num_heads=2, quantity=5, lookup_weights_as_separated=True,
                       lookup_targets_as_trainable=False), {}),
    ("sizes-steps", dict(input_size=8, hidden_size=3, num_heads=2, quantity=4, update_steps_max=2, scaling=2.0), {}),
    ("sequence-first", dict(input_size=8, quantity=5, batch_first=False), {}),
]


@pytest.mark.parametrize("kwargs, extras", [c[1:] for c in LOOKUP], ids=[c[0] for c in LOOKUP])
def test_lookup_layer_matches_hflayers(kwargs, extras):
    theirs, ours = _pair("HopfieldLayer", kwargs)
    (_, state, _), _ = _inputs(kwargs, extras)
    torch.testing.assert_close(ours(state), theirs(state), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.get_association_matrix(state).detach(), theirs.get_association_matrix(state),
                               rtol=1e-10, atol=1e-12)
    if ours.target_weights is not None:
        assert ours.target_weights.requires_grad == theirs.target_weights.requires_grad


def test_checkpoint_file_round_trip_and_uhop_kernel(tmp_path):
    # a trained hflayers checkpoint, saved to disk and read back with weights_only=True, loads into the plain and
    # into the U-Hop layer (identity Phi, which keeps its value: the ported layer starts as the hflayers one)
    theirs, _ = _pair("Hopfield", dict(input_size=8, num_heads=2, update_steps_max=1))
    torch.save(theirs.state_dict(), tmp_path / "hflayers.pt")
    state = torch.load(tmp_path / "hflayers.pt", weights_only=True)
    inputs, _ = _inputs(dict(input_size=8), {})
    for layer in (unn.Hopfield(8, num_heads=2, update_steps_max=1), unn.UHopfield(8, num_heads=2, update_steps_max=1)):
        layer = layer.to(DT).eval()
        unn.load_hflayers_state_dict(layer, state)
        torch.testing.assert_close(layer(inputs), theirs(inputs), rtol=1e-10, atol=1e-12)


def test_state_dict_of_a_model_with_nested_layers():
    class Net(torch.nn.Module):
        def __init__(self, lib):
            super().__init__()
            self.embed = torch.nn.Linear(5, 8)
            self.pool = lib.HopfieldPooling(8, num_heads=2, quantity=2)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.pool(self.embed(x)))

    torch.manual_seed(0)
    theirs = Net(hflayers).to(DT).eval()
    _randomise(theirs, 3)
    ours = Net(unn).to(DT).eval()
    buf = io.BytesIO()
    torch.save(theirs.state_dict(), buf)
    buf.seek(0)
    unn.load_hflayers_state_dict(ours, torch.load(buf, weights_only=True))
    x = torch.randn(B, M, 5, dtype=DT)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-12)


def test_hflayers_encoder_wraps_a_uhop_layer():
    # hflayers' own wrapper needs state_pattern_dim, reset_parameters and the forward keywords
    torch.manual_seed(0)
    theirs = HopfieldEncoderLayer(hflayers.Hopfield(8, num_heads=2), dim_feedforward=16).to(DT).eval()
    ours = HopfieldEncoderLayer(unn.Hopfield(8, num_heads=2), dim_feedforward=16).to(DT).eval()
    _randomise(theirs, 4)
    unn.load_hflayers_state_dict(ours, theirs.state_dict())     # the wrapper's own keys pass through
    x = torch.randn(B, M, 8, dtype=DT)
    mask = torch.arange(M)[None, :] > torch.arange(M)[:, None]
    torch.testing.assert_close(ours(x, src_mask=mask), theirs(x, src_mask=mask), rtol=1e-10, atol=1e-12)


def test_concat_bias_pattern_is_skipped_with_a_warning_and_matches_hflayers():
    # hflayers creates bias_k / bias_v for concat_bias_pattern=True but never appends them (a defect): the
    # uhop.nn layer built without the option computes what the hflayers layer computed, and says why
    theirs, _ = _pair("Hopfield", dict(input_size=8, num_heads=2))
    torch.manual_seed(0)
    with_bias = hflayers.Hopfield(8, num_heads=2, concat_bias_pattern=True).to(DT).eval()
    _randomise(with_bias, 7)
    ours = unn.Hopfield(8, num_heads=2).to(DT).eval()
    with pytest.warns(UserWarning, match="never appends them"):
        unn.load_hflayers_state_dict(ours, with_bias.state_dict())
    inputs, _ = _inputs(dict(input_size=8), {})
    torch.testing.assert_close(ours(inputs), with_bias(inputs), rtol=1e-10, atol=1e-12)
    appended = unn.Hopfield(8, num_heads=2, concat_bias_pattern=True).to(DT).eval()
    with pytest.warns(UserWarning, match="outputs differ"):
        unn.load_hflayers_state_dict(appended, with_bias.state_dict())
    assert not torch.allclose(appended(inputs), with_bias(inputs))


def test_fully_masked_query_is_an_error_where_hflayers_returns_nan():
    theirs, ours = _pair("Hopfield", dict(input_size=8))
    inputs, _ = _inputs(dict(input_size=8), {})
    pad = torch.zeros(B, M, dtype=torch.bool)
    pad[1] = True
    assert torch.isnan(theirs(inputs, stored_pattern_padding_mask=pad)).any()
    with pytest.raises(ValueError, match="every stored pattern is masked for query 0 of batch item 1"):
        ours(inputs, stored_pattern_padding_mask=pad)


def test_load_errors_name_the_size_to_check():
    theirs = hflayers.Hopfield(8, num_heads=2, hidden_size=3)
    with pytest.raises(ValueError, match="hidden_size and pattern_size are per head"):
        unn.load_hflayers_state_dict(unn.Hopfield(8, num_heads=2), theirs.state_dict())
    with pytest.raises(ValueError, match="holds no uhop.nn"):
        unn.load_hflayers_state_dict(torch.nn.Linear(2, 2), theirs.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="Unexpected key"):
            unn.load_hflayers_state_dict(unn.Hopfield(8, num_heads=2, hidden_size=3),
                                         {**theirs.state_dict(), "association_core.extra": torch.ones(1)})

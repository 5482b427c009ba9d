"""STanHop-Net (uhop.models.stanhop): shapes, initialisation, learnable alpha, overfitting, U-Hop inner steps.

Tiny widths keep every test well under a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import pytest
import torch

from uhop.models.stanhop import STanHopNet, blocks_for_horizon
from uhop.nn import HopfieldPooling, hopfield_layers, kernel_parameters, record_stored_patterns, separation_step

TINY = dict(d_model=16, n_heads=2, d_ff=32, factor=3, dropout=0.0)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is much faster (tests/conftest.py)


@pytest.mark.parametrize("horizon,blocks", [(96, 1), (192, 1), (336, 2), (720, 2)])
def test_blocks_follow_appendix_f5(horizon, blocks):
    assert blocks_for_horizon(horizon) == blocks
    assert STanHopNet(3, 48, horizon, **TINY).n_blocks == blocks


@pytest.mark.parametrize("input_len,horizon,n_blocks", [(48, 24, 1), (50, 30, 2), (96, 12, 3), (12, 7, 1)])
def test_output_shape_and_padding(input_len, horizon, n_blocks):
    torch.manual_seed(0)
    model = STanHopNet(4, input_len, horizon, n_blocks=n_blocks, **TINY)
    out = model(torch.randn(2, input_len, 4))
    assert out.shape == (2, horizon, 4)
    assert torch.isfinite(out).all()
    assert len(model.encoder) == n_blocks and len(model.decoder) == n_blocks + 1
    # coarse-graining only from the second block on, window 2
    assert model.encoder[0].merge is None
    assert all(b.merge is not None and b.merge.win_size == 2 for b in model.encoder[1:])


def test_wrong_input_shape_raises():
    model = STanHopNet(4, 24, 12, **TINY)
    with pytest.raises(ValueError, match="input_len=24"):
        model(torch.randn(2, 25, 4))
    with pytest.raises(ValueError, match="n_heads"):
        STanHopNet(4, 24, 12, d_model=10, n_heads=4)


def test_pooling_patterns_are_initialised():
    torch.manual_seed(0)
    model = STanHopNet(5, 24, 12, **TINY)
    pools = [m for m in model.modules() if isinstance(m, HopfieldPooling)]
    assert len(pools) == 3  # 1 encoder block + 2 decoder layers
    for pool in pools:
        w = pool.pooling_weights
        assert w.shape == (1, TINY["factor"], TINY["d_model"])
        assert torch.isfinite(w).all() and w.abs().max() > 0 and w.abs().max() < 1.0
        assert w.std() > 1e-3  # distinct patterns, not a constant


def test_alpha_is_learnable_and_stays_in_open_interval():
    torch.manual_seed(0)
    model = STanHopNet(3, 24, 12, **TINY)
    layers = hopfield_layers(model)
    assert layers and all(layer.separation.learnable for layer in layers)
    logits = [layer.separation.alpha_logit for layer in layers]
    opt = torch.optim.Adam(logits, lr=1.0)  # large steps on the alpha logits only
    x, y = torch.randn(4, 24, 3), torch.randn(4, 12, 3)
    before = model.alphas().clone()
    for _ in range(4):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    alphas = model.alphas()
    assert not torch.equal(alphas, before)
    assert ((alphas > 1.0) & (alphas < 2.0)).all()
    assert (alphas - before).abs().max() > 0.1


def test_tiny_overfit():
    torch.manual_seed(0)
    t = torch.arange(8 * 36, dtype=torch.float32).reshape(8, 36)
    series = torch.stack([torch.sin(t / 5.0), torch.cos(t / 7.0)], dim=-1)  # 8 windows, 2 channels
    x, y = series[:4, :24], series[:4, 24:]
    model = STanHopNet(2, 24, 12, **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        first = float((model(x) - y).pow(2).mean())
    for _ in range(40):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 10, (first, float(loss.detach()))


def test_uhop_starts_as_plain_model_and_inner_steps_touch_only_kernels():
    torch.manual_seed(0)
    plain = STanHopNet(3, 24, 12, **TINY)
    torch.manual_seed(0)
    model = STanHopNet(3, 24, 12, uhop=True, **TINY)
    x = torch.randn(6, 24, 3)
    # identity-initialised Phi consumes no random numbers: same weights, same output
    torch.testing.assert_close(model(x), plain(x))
    kernels = kernel_parameters(model)
    assert len(kernels) == len(hopfield_layers(model)) == 11  # 3 encoder + 2 x 4 decoder Hopfield layers
    kernel_ids = {id(p) for p in kernels}
    others = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in kernel_ids}
    kernel_before = [p.detach().clone() for p in kernels]
    opt = torch.optim.SGD(kernels, lr=0.1)
    losses = [separation_step(model, x, opt) for _ in range(6)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.02, losses
    for n, p in model.named_parameters():
        if id(p) not in kernel_ids:
            assert torch.equal(p, others[n]), f"inner step changed {n}"
    assert any(not torch.equal(a, b) for a, b in zip(kernels, kernel_before))


# -- values, not only shapes: each piece against a computation written out here ------------------------------------

def test_segment_embedding_values_by_hand():
    from uhop.models.stanhop import SegmentEmbedding

    torch.manual_seed(0)
    emb = SegmentEmbedding(seg_len=2, d_model=3).double()
    x = torch.arange(1.0, 9.0, dtype=torch.float64).view(1, 4, 2)   # (B=1, L=4, C=2): rows t, channels c
    out = emb(x)                                                      # (1, C=2, L/2=2, 3)
    W, b = emb.linear.weight, emb.linear.bias
    for c in range(2):
        for s in range(2):
            segment = torch.stack([x[0, 2 * s, c], x[0, 2 * s + 1, c]])  # channel c, time steps 2s, 2s+1
            torch.testing.assert_close(out[0, c, s], W @ segment + b)


def test_coarse_grain_merges_neighbours_and_pads_a_ragged_end():
    from uhop.models.stanhop import CoarseGrain

    torch.manual_seed(1)
    cg = CoarseGrain(d_model=2, win_size=2).double()
    x = torch.randn(1, 1, 3, 2, dtype=torch.float64)                # 3 segments: the last is repeated
    out = cg(x)
    assert out.shape == (1, 1, 2, 2)
    for s, (a, b) in enumerate(((0, 1), (2, 2))):
        merged = torch.cat([x[0, 0, a], x[0, 0, b]])
        torch.testing.assert_close(out[0, 0, s], cg.linear(cg.norm(merged)))


def test_prediction_is_the_sum_of_the_decoder_layers_cut_to_the_horizon():
    torch.manual_seed(2)
    net = STanHopNet(3, 20, 10, d_model=8, n_heads=2, d_ff=16, factor=2, seg_len=4, dropout=0.0).double().eval()
    parts = []
    hooks = [layer.predict.register_forward_hook(lambda m, i, o: parts.append(o)) for layer in net.decoder]
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    out = net(x)
    for h in hooks:
        h.remove()
    # each decoder layer predicts (B*C*out_segments, seg_len); the network sums them and cuts 12 -> 10 steps
    B, C, segs = 2, 3, net.out_segments
    total = sum(p.reshape(B, C, segs * 4) for p in parts)
    torch.testing.assert_close(out, total.transpose(1, 2)[:, :10, :])
    assert len(parts) == net.n_blocks + 1


def test_look_back_is_padded_with_its_first_row():
    torch.manual_seed(3)
    net = STanHopNet(2, 10, 4, d_model=4, n_heads=1, d_ff=8, factor=2, seg_len=4, dropout=0.0).double().eval()
    seen = []
    hook = net.embedding.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x = torch.randn(1, 10, 2, dtype=torch.float64)
    net(x)
    hook.remove()
    padded = seen[0]
    assert padded.shape == (1, 12, 2) and net.pad == 2
    torch.testing.assert_close(padded[:, :2], x[:, :1].expand(-1, 2, -1))
    torch.testing.assert_close(padded[:, 2:], x)


def test_input_dtype_and_empty_batch_are_clear_errors():
    net = STanHopNet(3, 24, 12, d_model=8, n_heads=2, d_ff=16, factor=2)
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the model's parameters are torch.float32"):
        net(torch.randn(2, 24, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        net(torch.ones(2, 24, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one window"):
        net(torch.randn(0, 24, 3))
    assert net.double()(torch.randn(2, 24, 3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("uhop", [False, True])
def test_first_decoder_layer_runs_once_per_batch_in_evaluation_bit_for_bit(uhop):
    # its input is the learned decoder queries, the same for every window: in eval mode without gradients the
    # model runs it on one window and expands; the outputs must be exactly those of running it on every window
    torch.manual_seed(0)
    model = STanHopNet(5, 36, 40, n_blocks=2, uhop=uhop, **{**TINY, "dropout": 0.3}).eval()
    x = torch.randn(13, 36, 5)
    calls = []
    model.decoder[0].self_layer.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        shared = model(x)
        model.share_first_decoder_layer = False  # the switch (the benchmark's path before the speed work)
        each = model(x)
    del model.share_first_decoder_layer
    assert calls == [1, 13]
    assert torch.equal(shared.view(torch.int32), each.view(torch.int32))
    # not with gradients or in training (dropout differs per window); in Algorithm 2's inner pass it is shared
    model(x)
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad(), record_stored_patterns(model):
        model(x)
    assert calls[2:] == [13, 13, 1]


@pytest.mark.parametrize("include_state", [False, True])
@pytest.mark.parametrize("horizon,batch", [(12, 1), (40, 13), (40, 16)])
def test_inner_pass_with_the_shared_first_decoder_layer_is_bit_for_bit_the_unshared_one(horizon, batch, include_state):
    # Algorithm 2's inner pass runs the first decoder layer on one window and repeats the patterns its layers
    # recorded over the batch: the recorded tensors, the separation loss and the kernels after the SGD step must be
    # exactly those of running the layer on every window
    def inner(share):
        torch.manual_seed(1)
        model = STanHopNet(5, 36, horizon, n_blocks=2, uhop=True, **{**TINY, "dropout": 0.3})
        model.share_first_decoder_layer = share
        x = torch.randn(batch, 36, 5)
        model.decoder[0].self_layer.register_forward_hook(lambda m, i, o: calls[share].append(i[0].shape[0]))
        with torch.no_grad(), record_stored_patterns(model.eval()) as layers:
            model(x)
            recorded = [(layer.recorded_stored.clone(), layer.recorded_state.clone()) for layer in layers]
        opt = torch.optim.SGD(kernel_parameters(model), lr=0.1)
        loss = separation_step(model, x, opt, include_state=include_state)
        return recorded, loss, [p.detach().clone() for p in kernel_parameters(model)]

    calls = {True: [], False: []}
    (rec_s, loss_s, phi_s), (rec_e, loss_e, phi_e) = inner(True), inner(False)
    assert calls == {True: [1, 1], False: [batch, batch]}  # the recording pass, then separation_step's own
    assert len(rec_s) == len(rec_e)
    for (stored_s, state_s), (stored_e, state_e) in zip(rec_s, rec_e):
        assert stored_s.shape == stored_e.shape and stored_s.is_contiguous() == stored_e.is_contiguous()
        assert torch.equal(stored_s, stored_e) and torch.equal(state_s, state_e)
    assert loss_s == loss_e
    assert all(torch.equal(a, b) for a, b in zip(phi_s, phi_e))

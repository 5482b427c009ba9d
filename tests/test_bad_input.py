"""Bad input raises ValueError / TypeError whose message names the argument."""

import pytest
import torch

import uhop

DT = torch.float64
XI = torch.rand(6, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
Q = torch.rand(3, 4, dtype=DT, generator=torch.Generator().manual_seed(1))


def _nan(x):
    y = x.clone()
    y[0, 0] = float("nan")
    return y


def _inf(x):
    y = x.clone()
    y[1, 1] = float("inf")
    return y


CASES = [
    # (id, callable, exception, match)
    ("memories-1d", lambda: uhop.retrieve(Q, XI[0]), ValueError, r"memories must be a 2-D tensor \(M, d\), got shape \(4,\)"),
    ("memories-3d", lambda: uhop.retrieve(Q, XI[None]), ValueError, "memories"),
    ("memories-empty", lambda: uhop.retrieve(Q[:, :0], XI[:0, :0]), ValueError, "memories must not be empty"),
    ("memories-not-tensor", lambda: uhop.retrieve(Q, XI.tolist()), TypeError, "memories must be a torch.Tensor"),
    ("memories-int", lambda: uhop.retrieve(Q, (XI * 10).long()), TypeError, "memories must have a floating"),
    ("memories-nan", lambda: uhop.retrieve(Q, _nan(XI)), ValueError, "memories contains NaN"),
    ("memories-inf", lambda: uhop.energy(Q, _inf(XI)), ValueError, "memories contains NaN or Inf"),
    ("queries-dim", lambda: uhop.retrieve(torch.rand(3, 5, dtype=DT), XI), ValueError, "queries must have last dimension d = 4"),
    ("queries-3d", lambda: uhop.retrieve(Q[None], XI), ValueError, "queries must be a 1-D or 2-D"),
    ("queries-nan", lambda: uhop.retrieve(_nan(Q), XI), ValueError, "queries contains NaN"),
    ("queries-not-tensor", lambda: uhop.retrieve(Q.numpy(), XI), TypeError, "queries must be a torch.Tensor"),
    ("queries-dtype", lambda: uhop.retrieve(Q.float(), XI), TypeError, "queries has dtype torch.float32 but memories"),
    ("x-energy-dim", lambda: uhop.energy(torch.rand(2, dtype=DT), XI), ValueError, "x must have last dimension"),
    ("beta-zero", lambda: uhop.retrieve(Q, XI, beta=0.0), ValueError, "beta must be > 0"),
    ("memories-meta", lambda: uhop.retrieve(Q, XI.to("meta")), ValueError, "memories is a meta tensor"),
    ("queries-meta", lambda: uhop.retrieve(Q.to("meta"), XI), ValueError, "queries is a meta tensor"),
    ("stage1-meta", lambda: uhop.fit_kernel(XI.to("meta"), epochs=1), ValueError, "memories is a meta tensor"),
    # separation maps on scores they cannot take: an error naming z, never NaN or an index error inside entmax
    ("softmax-plus-inf", lambda: uhop.softmax(torch.tensor([[1.0, float("inf")]])), ValueError, "z has a slice.*\\+inf"),
    ("sparsemax-plus-inf", lambda: uhop.sparsemax(torch.tensor([[1.0, float("inf")]])), ValueError, "NaN or \\+inf"),
    ("entmax-nan", lambda: uhop.entmax(torch.tensor([[float("nan"), 1.0]]), 1.3), ValueError, "z has a slice"),
    ("entmax15-all-masked", lambda: uhop.entmax(torch.full((2, 3), float("-inf")), 1.5), ValueError,
     "no finite score"),
    ("softmax-numpy", lambda: uhop.softmax(Q.numpy()), TypeError, "z must be a torch.Tensor, got ndarray"),
    ("sparsemax-int", lambda: uhop.sparsemax(torch.ones(2, 3, dtype=torch.long)), TypeError,
     "z must have a floating-point dtype"),
    # overflowing scores: an error naming beta and the fix, never NaN weights or an index error from entmax
    ("scores-overflow", lambda: uhop.retrieve(Q.float() * 1e20, XI.float() * 1e20), FloatingPointError,
     "scores times beta=1 are not finite"),
    ("scores-overflow-sparse", lambda: uhop.retrieve(Q.float() * 1e20, XI.float() * 1e20, separation="sparsemax"),
     FloatingPointError, "not finite.*scale the memories"),
    ("beta-overflow", lambda: uhop.retrieve(Q.float(), XI.float(), beta=1e38 * 1e1), FloatingPointError,
     "beta=1e\\+39"),
    ("association-overflow", lambda: uhop.association(Q.float(), XI.float(), beta=3e38), FloatingPointError,
     "lower beta"),
    ("stage1-diverges", lambda: uhop.UHop(lr=1e30, epochs=5).fit(torch.rand(10, 8, generator=torch.Generator().manual_seed(0))),
     FloatingPointError,
     "Stage I diverged.*lr=1e\\+30"),
    ("beta-negative", lambda: uhop.energy(Q, XI, beta=-1.0), ValueError, "beta must be > 0"),
    ("beta-nan", lambda: uhop.retrieve(Q, XI, beta=float("nan")), ValueError, "beta must be finite"),
    ("beta-string", lambda: uhop.retrieve(Q, XI, beta="1"), TypeError, "beta must be a real number"),
    ("alpha-low", lambda: uhop.entmax(Q, 0.5), ValueError, r"alpha must lie in \[1, 2\]"),
    ("alpha-high", lambda: uhop.Psi_star(Q, 1.0, 2.5), ValueError, "alpha must lie in"),
    ("separation-alpha", lambda: uhop.retrieve(Q, XI, separation=3.0), ValueError, r"separation must lie in \[1, 2\]"),
    ("separation-name", lambda: uhop.retrieve(Q, XI, separation="relu"), ValueError, "separation .*'softmax', 'entmax15', 'sparsemax'"),
    ("separation-type", lambda: uhop.separation(None), TypeError, "separation must be one of"),
    ("similarity-name", lambda: uhop.retrieve(Q, XI, similarity="cosine"), ValueError, "similarity.*'dot', 'l2', 'manhattan'"),
    ("steps-zero", lambda: uhop.retrieve(Q, XI, steps=0), ValueError, "steps must be >= 1"),
    ("steps-float", lambda: uhop.retrieve(Q, XI, steps=2.0), TypeError, "steps must be an int"),
    ("tol-negative", lambda: uhop.retrieve(Q, XI, tol=-1e-3), ValueError, "tol must be > 0"),
    ("kernel-type", lambda: uhop.retrieve(Q, XI, kernel=torch.eye(4, dtype=DT)), TypeError, "kernel must be a uhop.LinearKernel"),
    ("kernel-dim", lambda: uhop.retrieve(Q, XI, kernel=uhop.LinearKernel(5, dtype=DT)), ValueError, "kernel has input dimension"),
    ("keys-without-kernel", lambda: uhop.retrieve(Q, XI, keys=XI), ValueError, "keys"),
    ("t-zero", lambda: uhop.separation_loss(Q, t=0.0), ValueError, "t must be > 0"),
    ("t-fit", lambda: uhop.fit_kernel(XI, t=-2.0), ValueError, "t must be > 0"),
    ("reduction", lambda: uhop.separation_loss(Q, reduction="mean"), ValueError, "reduction.*'avg', 'max'"),
    ("pairs", lambda: uhop.separation_loss(Q, pairs="some"), ValueError, "pairs.*'distinct', 'all'"),
    ("max-all-pairs", lambda: uhop.separation_loss(Q, reduction="max", pairs="all"), ValueError, "pairs must be 'distinct'"),
    ("features-one-row", lambda: uhop.separation_loss(Q[:1]), ValueError, "features must contain at least 2 rows"),
    ("epochs-negative", lambda: uhop.fit_kernel(XI, epochs=-1), ValueError, "epochs must be >= 0"),
    ("epochs-float", lambda: uhop.fit_kernel(XI, epochs=1.5), TypeError, "epochs must be an int"),
    ("epochs-bool", lambda: uhop.fit_kernel(XI, epochs=True), TypeError, "epochs must be an int"),
    ("lr-zero", lambda: uhop.fit_kernel(XI, lr=0.0), ValueError, "lr must be > 0"),
    ("loss-name", lambda: uhop.fit_kernel(XI, loss="min"), ValueError, "loss.*'avg', 'max'"),
    ("optimizer-name", lambda: uhop.fit_kernel(XI, optimizer="lbfgs"), ValueError, "optimizer.*'sgd', 'adam'"),
    ("schedule-name", lambda: uhop.fit_kernel(XI, lr_schedule="cosine"), ValueError, "lr_schedule.*'constant'"),
    ("preset-name", lambda: uhop.fit_kernel(XI, preset="paper"), ValueError, "preset.*'official', 'official_max', 'official_avg'"),
    ("preset-conflict", lambda: uhop.fit_kernel(XI, preset="official", loss="avg"), ValueError, "loss='avg' conflicts with preset='official'"),
    ("init-name", lambda: uhop.LinearKernel(4, init="xavier"), ValueError, "init.*'identity', 'normal', 'official'"),
    ("d_phi-identity", lambda: uhop.LinearKernel(4, 2), ValueError, "d_phi must be >= d"),
    ("d-zero", lambda: uhop.LinearKernel(0), ValueError, "d must be >= 1"),
    ("train_fraction", lambda: uhop.fit_kernel(XI, train_fraction=1.5), ValueError, "train_fraction must lie in"),
    ("train_fraction-small", lambda: uhop.fit_kernel(XI, train_fraction=0.1), ValueError, "train_fraction"),
    ("normalize_rows-type", lambda: uhop.fit_kernel(XI, normalize_rows="yes"), TypeError, "normalize_rows must be a bool"),
    ("engine", lambda: uhop.fit_kernel(XI, engine="fast"), ValueError, "engine.*'gram'.*'autograd'"),
    ("engine-gram-adam", lambda: uhop.fit_kernel(XI, engine="gram", optimizer="adam"), ValueError, "engine='gram' needs optimizer='sgd'"),
    ("checkpoints-range", lambda: uhop.fit_kernel(XI, epochs=3, checkpoints=[5]), ValueError, "checkpoints must lie in 0..epochs=3"),
    ("checkpoints-type", lambda: uhop.fit_kernel(XI, epochs=3, checkpoints=3), TypeError, "checkpoints must be a sequence"),
    ("seed-type", lambda: uhop.fit_kernel(XI, init="normal", seed="x"), TypeError, "seed must be an int"),
    ("uhop-beta", lambda: uhop.UHop(beta=0), ValueError, "beta must be > 0"),
    ("uhop-separation", lambda: uhop.UHop(separation="hardmax"), ValueError, "separation"),
    ("uhop-fit-memories", lambda: uhop.UHop(epochs=0).fit(XI[0]), ValueError, "memories must be a 2-D"),
    ("uhop-query-dim", lambda: uhop.UHop(epochs=0).fit(XI).retrieve(torch.rand(7, dtype=DT)), ValueError, "queries must have last dimension"),
    ("sigma-negative", lambda: uhop.gaussian_noise(Q, -0.1), ValueError, "sigma must be >= 0"),
    ("noise-mode", lambda: uhop.gaussian_noise(Q, 0.1, mode="uniform"), ValueError, "mode.*'per_entry', 'total_norm'"),
    ("p-one", lambda: uhop.random_mask(Q, p=1.0), ValueError, r"p must lie in \[0, 1\)"),
    ("p-negative", lambda: uhop.random_mask(Q, p=-0.1), ValueError, "p must lie in"),
    ("per-name", lambda: uhop.random_mask(Q, per="row"), ValueError, "per.*'entry', 'pixel'"),
    ("mask-x-type", lambda: uhop.random_mask([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
    ("generator-type", lambda: uhop.random_mask(Q, generator=0), TypeError, "generator must be a torch.Generator"),
    ("half-side", lambda: uhop.half_mask(torch.rand(1, 4, 4), side="left"), ValueError, "side.*'bottom', 'top'"),
    ("half-flat-no-shape", lambda: uhop.half_mask(Q), ValueError, "shape"),
    ("half-shape-size", lambda: uhop.half_mask(Q, shape=(3, 3)), ValueError, "x must have last dimension prod"),
    ("dam-degree", lambda: uhop.dam(Q, XI, degree=0), ValueError, "degree must be >= 1"),
    ("baseline-name", lambda: uhop.baseline("poly"), ValueError, "baseline.*'mhm'"),
    ("metric-shape", lambda: uhop.sse(Q, Q[:2]), ValueError, "retrieved has shape"),
    ("metric-threshold", lambda: uhop.success_rate(Q, Q, -1.0), ValueError, "threshold must be >= 0"),
]


@pytest.mark.parametrize("fn,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_argument(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_every_public_entry_point_has_bad_input_cases():
    # not a count: each public function this file is about must be exercised by at least one case
    import inspect

    sources = " ".join(inspect.getsource(fn) for _, fn, _, _ in CASES)
    for name in ("retrieve", "association", "energy", "separation_loss", "fit_kernel", "UHop", "entmax"):
        assert f"uhop.{name}(" in sources, f"no bad-input case calls uhop.{name}"
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"


def test_mismatched_device_is_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="queries is on device"):
        uhop.retrieve(Q.cuda(), XI)


def test_messages_start_with_the_argument_name():
    with pytest.raises(ValueError) as info:
        uhop.retrieve(Q, XI, beta=-3)
    assert str(info.value).startswith("beta")

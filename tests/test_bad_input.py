"""The bad-input battery: bad or edge inputs across the public API (retrieval, Stage I, separation, energies,
uhop.nn layers, trainers, models, data, runners, command lines).  Each case asserts the exact outcome: the error
type and a message that names the argument (CASES), or the correct value / exit status (the tests below it)."""

import math

import pytest
import torch

import uhop
import uhop.data as data
from uhop.data.__main__ import main as data_main
from uhop.experiments import classification as cls_exp
from uhop.experiments import forecasting as fc_exp
from uhop.experiments import retrieval as ret_exp
from uhop.models.stanhop import STanHopNet, blocks_for_horizon
from uhop.models.vision import HopfieldClassifier, HopfieldViT, build_model
from uhop.nn import (BilevelTrainer, FeatureMap, Hopfield, HopfieldLayer, HopfieldPooling, SeparationModule,
                     dl_separation_loss, load_hflayers_state_dict, separation_step)
from uhop.nn.bilevel import TensorBatches, load_checkpoint

DT = torch.float64
XI = torch.rand(6, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
Q = torch.rand(3, 4, dtype=DT, generator=torch.Generator().manual_seed(1))


X8 = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2))
TINY_STANHOP = dict(d_model=8, n_heads=2, d_ff=8, factor=2)


def _all_masked_item():
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1] = True
    return pad


def _tiny_model():
    return torch.nn.Sequential(Hopfield(8, kernel="linear"), torch.nn.Flatten(), torch.nn.Linear(40, 3))


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
    # nn layers (hflayers arguments and masks)
    ("hopfield-heads-zero", lambda: Hopfield(8, num_heads=0), ValueError, "num_heads must be >= 1"),
    ("hopfield-hidden-float", lambda: Hopfield(8, hidden_size=2.5), TypeError, "hidden_size must be an int"),
    ("hopfield-heads-indivisible", lambda: Hopfield(8, num_heads=3), ValueError,
     r"input_size \(8\) must be divisible by num_heads \(3\).*or pass hidden_size \(per head\)"),
    ("hopfield-batch-first-str", lambda: Hopfield(8, batch_first="yes"), TypeError, "batch_first must be a bool"),
    ("hopfield-eps-zero", lambda: Hopfield(8, update_steps_eps=0.0), ValueError, "update_steps_eps must be > 0"),
    ("hopfield-scaling-nan", lambda: Hopfield(8, scaling=float("nan")), ValueError, "scaling must be finite"),
    ("hopfield-scaling-matrix", lambda: Hopfield(8, num_heads=2, scaling=torch.ones(2, 2)), ValueError,
     "scaling must be a number or a 1-D tensor of num_heads = 2 values"),
    ("hopfield-steps-per-head", lambda: Hopfield(8, num_heads=2, update_steps_max=[1, 2, 3]), ValueError,
     "update_steps_max must be one value or num_heads = 2 values"),
    ("hopfield-activation", lambda: Hopfield(8, association_activation="relux"), ValueError,
     "association_activation must name a torch function"),
    ("hopfield-affine-without-norm", lambda: Hopfield(8, normalize_state_pattern=False,
                                                      normalize_state_pattern_affine=True), ValueError,
     "normalize_state_pattern_affine=True needs normalize_state_pattern=True"),
    ("hopfield-output-size-no-projection", lambda: Hopfield(8, disable_out_projection=True, output_size=3),
     ValueError, "output_size must be None or num_heads \\* pattern_size = 8"),
    ("hopfield-bias-pattern-static", lambda: Hopfield(8, concat_bias_pattern=True, pattern_projection_as_static=True),
     ValueError, "concat_bias_pattern=True .* pattern_projection_as_static=False"),
    ("hopfield-input-dtype", lambda: Hopfield(8)(X8.double()), TypeError,
     "stored_pattern has dtype torch.float64 but the layer's parameters are torch.float32"),
    ("hopfield-mask-uint8", lambda: Hopfield(8)(X8, association_mask=torch.zeros(5, 5, dtype=torch.uint8)),
     TypeError, "association_mask must be a bool tensor .*torch.uint8"),
    ("hopfield-mask-list", lambda: Hopfield(8)(X8, association_mask=[[True]]), TypeError,
     "association_mask must be a torch.Tensor"),
    ("hopfield-mask-per-item-not-per-head", lambda: Hopfield(8, num_heads=2)(
        X8, association_mask=torch.zeros(2, 5, 5, dtype=torch.bool)), ValueError,
     r"association_mask must have shape \(Q, M\) = \(5, 5\) or \(B \* num_heads, Q, M\) = \(4, 5, 5\)"),
    ("hopfield-mask-nan", lambda: Hopfield(8)(X8, association_mask=torch.full((5, 5), float("nan"))), ValueError,
     "association_mask is a float mask .* NaN or \\+inf"),
    ("hopfield-padding-shape", lambda: Hopfield(8)(X8, stored_pattern_padding_mask=torch.zeros(2, 4, dtype=torch.bool)),
     ValueError, r"stored_pattern_padding_mask must have shape \(B, M\) = \(2, 5\), got \(2, 4\)"),
    ("hopfield-all-masked", lambda: Hopfield(8)(X8, stored_pattern_padding_mask=_all_masked_item()), ValueError,
     "every stored pattern is masked for query 0 of batch item 1"),
    ("hopfield-no-memories", lambda: Hopfield(8)((X8[:, :0], X8, X8[:, :0])), ValueError,
     r"stored_pattern holds no patterns \(M = 0\)"),
    ("pooling-quantity-zero", lambda: HopfieldPooling(8, quantity=0), ValueError, "quantity must be >= 1"),
    ("pooling-trainable-int", lambda: HopfieldPooling(8, trainable=1), TypeError, "trainable must be a bool"),
    ("pooling-input-list", lambda: HopfieldPooling(8)([1.0, 2.0]), TypeError,
     "input must be a torch.Tensor of stored patterns"),
    ("lookup-projection-size", lambda: HopfieldLayer(8, pattern_projection_size=5), ValueError,
     r"pattern_projection_size \(5\) must equal stored_pattern_size \(8\) unless lookup_weights_as_separated"),
    ("lookup-state-dim", lambda: HopfieldLayer(8)(torch.randn(2, 3, 7)), ValueError,
     "state_pattern must have last dimension input_size = 8, got 7"),
    ("separation-module-heads", lambda: SeparationModule("learnable", num_heads=2)(torch.randn(2, 3, 4, 5)),
     ValueError, r"scores must have shape \(\.\.\., H=2, Q, M\)"),
    ("feature-map-dim", lambda: FeatureMap(4)(torch.randn(3, 5)), ValueError,
     "the feature map expects last dimension d = 4"),
    ("dl-loss-one-pattern", lambda: dl_separation_loss(torch.randn(1, 4)), ValueError,
     "features must hold at least 2 patterns per set"),
    ("load-hflayers-not-mapping", lambda: load_hflayers_state_dict(Hopfield(8), [1]), TypeError,
     "state_dict must be a mapping"),
    ("load-hflayers-rows", lambda: load_hflayers_state_dict(
        Hopfield(8), {"association_core.in_proj_weight": torch.zeros(10, 8)}), ValueError,
     "in_proj_weight has 10 rows but the uhop.nn layer expects q_proj 8 \\+ k_proj 8 \\+ v_proj 8 = 24"),
    # trainers
    ("trainer-model-type", lambda: BilevelTrainer("model"), TypeError, "model must be a torch.nn.Module, got str"),
    ("trainer-lr-zero", lambda: BilevelTrainer(_tiny_model(), lr=0.0), ValueError, "lr must be > 0"),
    ("trainer-inner-steps", lambda: BilevelTrainer(_tiny_model(), inner_steps=-1), ValueError,
     "inner_steps must be >= 0"),
    ("trainer-sep-loss", lambda: BilevelTrainer(_tiny_model(), sep_loss="l2"), ValueError,
     "sep_loss.*'dl', 'def2.2'"),
    ("trainer-scheduler", lambda: BilevelTrainer(_tiny_model(), scheduler="step"), ValueError,
     "scheduler.*'cosine'"),
    ("trainer-fit-numpy", lambda: BilevelTrainer(_tiny_model(), progress=False).fit(
        (X8.numpy(), torch.zeros(2, dtype=torch.long)), epochs=1, batch_size=2), TypeError,
     "X must be a torch.Tensor, got ndarray"),
    ("trainer-fit-lengths", lambda: BilevelTrainer(_tiny_model(), progress=False).fit(
        (X8, torch.zeros(3, dtype=torch.long)), epochs=1, batch_size=2), ValueError,
     "X and y must have the same length, got 2 and 3"),
    ("trainer-fit-batch-size", lambda: BilevelTrainer(_tiny_model(), progress=False).fit(
        (X8, torch.zeros(2, dtype=torch.long)), epochs=1, batch_size=0), ValueError, "batch_size must be >= 1"),
    ("trainer-empty-set", lambda: TensorBatches(X8[:0], torch.zeros(0), 4), ValueError, "the training set is empty"),
    ("checkpoint-missing", lambda: load_checkpoint("/no/such/dir/last.pt"), FileNotFoundError, "/no/such/dir/last.pt"),
    # models
    ("stanhop-n-vars", lambda: STanHopNet(0, 24, 12), ValueError, "n_vars must be >= 1"),
    ("stanhop-dropout", lambda: STanHopNet(3, 24, 12, **{**TINY_STANHOP, "dropout": 1.0}), ValueError,
     r"dropout must lie in \[0, 1\)"),
    ("stanhop-heads", lambda: STanHopNet(3, 24, 12, d_model=10, n_heads=4), ValueError,
     r"d_model \(10\) must be divisible by n_heads \(4\)"),
    ("stanhop-float64", lambda: STanHopNet(3, 24, 12, **TINY_STANHOP)(torch.randn(2, 24, 3, dtype=torch.float64)),
     TypeError, "x has dtype torch.float64 but the model's parameters are torch.float32"),
    ("stanhop-empty-batch", lambda: STanHopNet(3, 24, 12, **TINY_STANHOP)(torch.randn(0, 24, 3)), ValueError,
     "x must hold at least one window"),
    ("stanhop-channels", lambda: STanHopNet(3, 24, 12, **TINY_STANHOP)(torch.randn(2, 24, 4)), ValueError,
     r"x must have shape \(B, input_len=24, n_vars=3\), got \(2, 24, 4\)"),
    ("stanhop-alpha", lambda: STanHopNet(3, 24, 12, **TINY_STANHOP, alpha_init=1.0), ValueError,
     r"alpha_init must lie in \(1, 2\]"),
    ("stanhop-horizon", lambda: blocks_for_horizon(0), ValueError, "horizon must be >= 1"),
    ("classifier-patch", lambda: HopfieldClassifier(patch_size=5), ValueError,
     r"patch_size \(5\) must divide the image size \(32\)"),
    ("classifier-image-size", lambda: HopfieldClassifier(dim=8)(torch.randn(2, 3, 28, 28)), ValueError,
     r"images must be \(B, C, 32, 32\), got \(2, 3, 28, 28\)"),
    ("classifier-variant", lambda: HopfieldClassifier(variant="mhm_x"), ValueError, "variant.*'mhm', 'mhm_uhop'"),
    ("classifier-heads", lambda: HopfieldClassifier(dim=10, num_heads=4), ValueError,
     r"dim \(10\) must be divisible by num_heads \(4\)"),
    ("vit-depth", lambda: HopfieldViT(depth=0), ValueError, "depth must be >= 1"),
    ("build-architecture", lambda: build_model("cifar10", "mhm", image_size=32, num_classes=10, patch_size=8, dim=8,
                                               architecture="resnet"), ValueError,
     "architecture.*'auto', 'classifier', 'vit'"),
    # data
    ("data-memories-M", lambda: data.sample_memories("mnist", 0, 0), ValueError, "M must be a positive integer"),
    ("data-dataset-name", lambda: data.load_images("svhn"), ValueError, "unknown dataset 'svhn'; valid datasets"),
    ("data-series-name", lambda: data.load_time_series("ETTh9"), ValueError,
     "unknown time-series dataset 'ETTh9'; valid time-series datasets: 'ETTh1', 'ETTm1', 'WTH'"),
    ("data-series-root", lambda: data.load_time_series("ETTh1", root="/no/such/dir"), data.DatasetNotFoundError,
     "dataset 'ETTh1' not found"),
    ("data-split-protocol", lambda: data.split_borders("ETTh1", 17420, 96, protocol="random"), ValueError,
     "split protocol 'random'; valid split protocols: 'informer', 'stanhop'"),
    ("data-split-short", lambda: data.split_borders("ETTh1", 50, 96), ValueError,
     "ETTh1 has 50 rows, the informer split needs 14400"),
    ("data-windows-input-len", lambda: data.SlidingWindowDataset(torch.randn(50, 3), 0, 5), ValueError,
     "input_len and horizon must be positive integers, got 0, 5"),
    ("data-windows-too-long", lambda: data.SlidingWindowDataset(torch.randn(10, 3), 8, 5), ValueError,
     r"window input_len \+ horizon = 8 \+ 5 = 13 is longer than the series \(10 rows\)"),
    ("data-windows-target", lambda: data.SlidingWindowDataset(torch.randn(50, 3), 8, 5, target_index=3), ValueError,
     "target_index 3 out of range for 3 columns"),
    # runners
    ("forecast-variant", lambda: fc_exp.ForecastConfig(variant="lstm"), ValueError,
     "variant.*'stanhop', 'stanhop_uhop', 'persistence', 'linear'"),
    ("forecast-loss", lambda: fc_exp.ForecastConfig(loss="huber"), ValueError, "loss.*'mae', 'mse'"),
    ("forecast-parameters", lambda: fc_exp.config_from_parameters({"horizn": 96}), ValueError,
     r"unknown forecasting parameter\(s\) \['horizn'\]"),
    ("forecast-run-empty", lambda: fc_exp.run(fc_exp.ForecastConfig(), [], [0]), ValueError,
     "variants and seeds must be non-empty"),
    ("classification-parameters", lambda: cls_exp.config_from_parameters({"epochz": 1}), ValueError,
     r"unknown classification parameter\(s\) \['epochz'\]"),
    ("classification-dataset", lambda: cls_exp.make_config("mnist"), ValueError,
     "dataset.*'cifar10', 'cifar100', 'tiny_imagenet'"),
    ("classification-preset", lambda: cls_exp.make_config("cifar10", "huge"), ValueError,
     "preset.*'paper', 'companion', 'cpu', 'smoke'"),
    ("classification-weight-decay", lambda: cls_exp.make_config("cifar10", weight_decay=-1.0), ValueError,
     "weight_decay must be >= 0"),
    ("classification-augment", lambda: cls_exp.make_config("cifar10", augment="yes"), TypeError,
     "augment must be a bool"),
    ("grid-unknown-field", lambda: ret_exp.run_grid({"datset": "mnist"}, "/tmp/never-written.csv"), ValueError,
     r"unknown GridConfig fields \['datset'\]"),
    ("grid-sizes", lambda: ret_exp.GridConfig("capacity", "synthetic", "paper", ("mhm",), (1,)), ValueError,
     r"sizes \(M\) must be >= 2"),
    ("grid-method", lambda: ret_exp.evaluate_cell("synthetic", "paper", "mhmx", 10, 1, 0.0, 0), ValueError,
     "unknown method 'mhmx'; valid method values: 'mhm'"),
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


# -- edge inputs whose answer is a value: the exact value ----------------------------------------------------------


def test_zero_association_answers_a_fully_padded_item_with_the_zero_pattern():
    layer = Hopfield(8, add_zero_association=True, disable_out_projection=True, input_bias=False)
    out = layer(X8, stored_pattern_padding_mask=_all_masked_item())
    assert torch.equal(out[1], torch.zeros(5, 8))
    assert float(out[0].detach().abs().max()) > 0


def test_constant_float_mask_leaves_the_association_unchanged():
    # softmax is invariant to a constant added to every score of a row: a float mask of -7 changes nothing
    layer = Hopfield(8, num_heads=2).double()
    x = X8.double()
    torch.testing.assert_close(layer.get_association_matrix(x, association_mask=torch.full((5, 5), -7.0)),
                               layer.get_association_matrix(x))


def test_one_stored_pattern_gets_all_the_weight():
    pool = HopfieldPooling(8, num_heads=2, quantity=3, separation="sparsemax")
    a = pool.get_association_matrix(X8[:, :1])
    assert torch.equal(a, torch.ones(2, 2, 3, 1))


def test_separation_step_without_uhop_layers_is_nan_and_changes_nothing():
    model = torch.nn.Sequential(Hopfield(8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert math.isnan(separation_step(model, X8))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- command lines: exit status and a message that names the bad argument ------------------------------------------


def test_data_verify_of_a_missing_root_exits_2(capsys):
    assert data_main(["verify", "--root", "/no/such/dir"]) == 2
    assert "the data root /no/such/dir does not exist" in capsys.readouterr().out


@pytest.mark.parametrize("main, kind", [(fc_exp.main, "forecasting"), (cls_exp.main, "classification")])
def test_train_command_names_an_unknown_run(main, kind):
    with pytest.raises(SystemExit, match=f"unknown run 'no_such_run'; {kind} runs in notebooks/full_size.yml"):
        main(["train", "--run", "no_such_run"])


def test_reproduce_names_an_unknown_run(capsys):
    from uhop import reproduce

    with pytest.raises(SystemExit) as info:
        reproduce.main(["run", "--only", "no_such_run", "--dry-run"])
    assert info.value.code == 2
    assert "unknown run name(s) 'no_such_run'" in capsys.readouterr().err

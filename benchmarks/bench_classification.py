"""Classification cost: training images/second per variant, Algorithm 2's overhead, epochs to accuracy.

Prints, and optionally writes as JSON with a manifest:

1. training throughput (images/s, one Adam step per batch of 128, forward + backward) of the four variants
   (MHM, MHM + U-Hop, Sparse MHM, Sparse MHM + U-Hop) of the CIFAR classifier of App F.4, and of the U-Hop
   variants with Algorithm 2 switched off (``inner_steps=0``), so that the **overhead of the inner loop**
   is the ratio of the two.  All cases are timed in interleaved rounds on the same synthetic 32x32 batches and
   the medians are compared, so that machine load hits every case alike;
2. the same for the Tiny ImageNet ViT (3 Hopfield blocks, 64x64 images);
3. epochs to reach a training / test accuracy, read from the committed CIFAR-10 curves
   (``results/classification/cifar10/curves.csv``) when present (App G.5's convergence measure).

    python benchmarks/bench_classification.py                  # full settings (about a minute on 2 cores)
    python benchmarks/bench_classification.py --quick          # a few seconds (used by the test suite)
    python benchmarks/bench_classification.py --json results/classification/benchmark.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from uhop.models import VARIANT_LABELS, build_model
from uhop.nn import kernel_parameters, separation_step
from uhop.provenance import atomic_write_text, collect_provenance, write_manifest

REPO = Path(__file__).resolve().parents[1]


def _case(dataset, variant, inner_steps, cfg, seed=0):
    torch.manual_seed(seed)
    image = 64 if dataset == "tiny_imagenet" else 32
    classes = 200 if dataset == "tiny_imagenet" else 10
    model = build_model(dataset, variant, image_size=image, num_classes=classes, patch_size=cfg["patch"],
                        dim=cfg["dim"], num_heads=cfg["heads"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    kopt = torch.optim.SGD(kernel_parameters(model), lr=0.1) if kernel_parameters(model) else None
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg["batch"], 3, image, image, generator=g)
    xi = x[:cfg["inner_batch"]]
    y = torch.randint(0, classes, (cfg["batch"],), generator=g)

    def step():
        if kopt is not None:
            for _ in range(inner_steps):
                separation_step(model, xi, kopt)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def throughput(dataset, cfg, rounds):
    cases = {}
    for variant in ("mhm", "mhm_uhop", "sparse", "sparse_uhop"):
        cases[(variant, 1 if variant.endswith("uhop") else 0)] = _case(dataset, variant, 1, cfg)
        if variant.endswith("uhop"):
            cases[(variant, 0)] = _case(dataset, variant, 0, cfg)
    for fn in cases.values():  # warm-up
        fn()
    times = {k: [] for k in cases}
    for _ in range(rounds):
        for key, fn in cases.items():
            start = time.perf_counter()
            for _ in range(cfg["steps"]):
                fn()
            times[key].append((time.perf_counter() - start) / cfg["steps"])
    rows = []
    for (variant, inner), ts in times.items():
        med = statistics.median(ts)
        rows.append({"dataset": dataset, "variant": variant, "label": VARIANT_LABELS[variant], "inner_steps": inner,
                     "seconds_per_step": med, "images_per_s": cfg["batch"] / med})
    by = {(r["variant"], r["inner_steps"]): r["seconds_per_step"] for r in rows}
    overhead = {v: by[(v, 1)] / by[(v, 0)] for v in ("mhm_uhop", "sparse_uhop")}
    vs_plain = {"mhm_uhop": by[("mhm_uhop", 1)] / by[("mhm", 0)],
                "sparse_uhop": by[("sparse_uhop", 1)] / by[("sparse", 0)]}
    return {"config": cfg, "rows": rows, "inner_loop_overhead": overhead, "uhop_vs_plain_variant": vs_plain}


def convergence(path=REPO / "results" / "classification" / "cifar10" / "curves.csv",
                thresholds=(0.3, 0.35, 0.4, 0.45)):
    if not path.exists():
        return {"note": f"{path} not found"}
    import pandas as pd

    from uhop.experiments.classification import epochs_to_accuracy

    curves = pd.read_csv(path)
    curves = curves[curves.train_size == curves.train_size.max()]
    out = []
    for (variant, seed), c in curves.groupby(["variant", "run_seed"]):
        row = {"variant": variant, "run_seed": int(seed)}
        for th in thresholds:
            row[f"train_acc>={th}"] = epochs_to_accuracy(c, th, "train_acc")
            row[f"test_acc>={th}"] = epochs_to_accuracy(c, th, "test_acc")
        row["seconds_per_epoch"] = float(c.seconds.mean())
        out.append(row)
    # Mean over seeds only when every seed reached the accuracy (NaN otherwise, never a biased mean).
    table = (pd.DataFrame(out).drop(columns="run_seed").groupby("variant")
             .agg(lambda s: s.mean() if s.notna().all() else float("nan")))
    return {"source": str(path.relative_to(REPO)), "seeds": int(curves.run_seed.nunique()),
            "epochs_to_accuracy_mean_over_seeds": table.reset_index().to_dict(orient="records")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--json", metavar="PATH", help="write results and a manifest (PATH.manifest.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.quick:
        cifar = dict(patch=16, dim=16, heads=1, batch=16, inner_batch=8, steps=1)
        tiny = dict(patch=32, dim=16, heads=2, batch=8, inner_batch=4, steps=1)
        rounds = 1
    else:  # the committed CPU configuration (preset "cpu"): B_2 = 128, B_1 = 32
        cifar = dict(patch=8, dim=64, heads=1, batch=128, inner_batch=32, steps=5)
        tiny = dict(patch=16, dim=32, heads=4, batch=128, inner_batch=32, steps=2)
        rounds = 5
    result = {"provenance": collect_provenance("cpu"), "torch_threads": torch.get_num_threads(),
              "cifar10": throughput("cifar10", cifar, rounds), "tiny_imagenet": throughput("tiny_imagenet", tiny, rounds),
              "convergence": convergence()}
    for key in ("cifar10", "tiny_imagenet"):
        print(f"\n{key}: {result[key]['config']}")
        for r in result[key]["rows"]:
            print(f"  {r['label']:>20} inner_steps={r['inner_steps']}: {r['images_per_s']:8.0f} images/s")
        print("  Algorithm 2 inner loop (N_i = 1) / same model without it:",
              {k: round(v, 2) for k, v in result[key]["inner_loop_overhead"].items()})
        print("  U-Hop variant / plain variant:", {k: round(v, 2) for k, v in result[key]["uhop_vs_plain_variant"].items()})
    print("\nconvergence:", json.dumps(result["convergence"], indent=1, default=str)[:2000])
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=str) + "\n")
        write_manifest(args.json + ".manifest.json", command="python " + " ".join(sys.argv),
                       parameters={"quick": args.quick, "cifar": cifar, "tiny": tiny, "rounds": rounds},
                       wall_time_s=time.perf_counter() - start, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())

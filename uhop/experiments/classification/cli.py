"""The command line ``python -m uhop.experiments.classification train``: some runs of one
``notebooks/full_size.yml`` classification entry, with exactly the entry's settings."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..._checks import check_choice
from ...models.vision import VARIANTS
from .config import config_from_parameters
from .training import run


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m uhop.experiments.classification train --run NAME [--variants V] [--seeds S]``: train chosen
    variants and run seeds of one ``notebooks/full_size.yml`` classification entry with exactly its settings
    (what the notebook would run), appending to its output folder, skipping finished runs -- for running a
    tier run by run in the background.  The summaries are rewritten after every run."""
    import argparse
    import sys

    from ..notebook import add_train_parser, full_size_entry, notebook_path

    parser = argparse.ArgumentParser(prog="python -m uhop.experiments.classification", description=main.__doc__)
    add_train_parser(parser.add_subparsers(dest="command", required=True), "classification")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = dict(full_size_entry(args.run, "classification").get("parameters") or {})
    cfg = config_from_parameters({**params, "device": args.device})
    if args.variants:
        cfg = replace(cfg, variants=tuple(check_choice(v.strip(), "variant", VARIANTS)
                                          for v in args.variants.split(",") if v.strip()))
    if args.seeds:
        cfg = replace(cfg, run_seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()))
    out = notebook_path(params.get("output_dir") or f"../_build/classification/{args.run}")
    run(cfg, out, command=" ".join(["python -m uhop.experiments.classification", *(argv or sys.argv[1:])]))
    return 0

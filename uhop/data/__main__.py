"""Command line: ``python -m uhop.data verify [--root DIR]`` | ``python -m uhop.data list [--root DIR]``.

``verify`` exits 0 when every known file is present and intact, 1 when one is corrupt (size or sha256), 2 when
files are missing or the root does not exist."""

from __future__ import annotations

import argparse
import sys

from .checksums import verify_root
from .paths import cache_dir, data_root
from .registry import available


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uhop.data", description="Check and list the uhop data root.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, text in (("verify", "check every known data file under the root (size + sha256)"),
                      ("list", "show which datasets/variants are present")):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--root", default=None, help="data root (default: $UHOP_DATA, else the user cache folder)")
    args = parser.parse_args(argv)
    root = data_root(args.root)
    print(f"data root: {root}")
    if args.cmd == "verify":
        rows = verify_root(root)
        for status, rel, detail in rows:
            print(f"{status:<7} {rel}  ({detail})")
        n = {s: sum(r[0] == s for r in rows) for s in ("PASS", "FAIL", "MISSING")}
        print(f"{n['PASS']} passed, {n['FAIL']} failed, {n['MISSING']} missing")
        if not root.is_dir():
            print(f"error: the data root {root} does not exist (check --root / UHOP_DATA)")
            return 2
        if n["PASS"] == 0 and n["FAIL"] == 0:
            print("note: no known data file found under this root (check --root / UHOP_DATA)")
        # exit status: 0 all present and intact, 1 a file is corrupt, 2 files are missing (and none corrupt)
        return 1 if n["FAIL"] else 2 if n["MISSING"] else 0
    print(f"cache: {cache_dir(create=False)}")
    for name, variants in available(root).items():
        print(f"{name:<14} {', '.join(variants) if variants else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

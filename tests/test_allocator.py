"""uhop.allocator: keeping freed memory must remove the page faults of large temporaries and change no number."""

import json
import subprocess
import sys
import textwrap

import pytest

from uhop import allocator

# A child process, so the malloc settings of the test session are untouched.  It repeats a computation that
# allocates and frees 44 MB temporaries (the size of a long-horizon decoder's entmax scores), then counts the minor
# page faults of further repetitions: with glibc's defaults every temporary is a fresh mmap that faults its pages.
PROBE = textwrap.dedent("""
    import json, resource, sys
    import torch
    from uhop.allocator import retain_freed_memory, retaining
    torch.set_num_threads(1)
    applied = retain_freed_memory() if sys.argv[1] == "1" else False
    x = torch.randn(448, 4, 60, 100, generator=torch.Generator().manual_seed(0))
    def work():
        s = x - x.amax(-1, keepdim=True)
        return (s.exp() / s.exp().sum(-1, keepdim=True)).sum(0)
    for _ in range(3):  # reach the steady heap layout
        work()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        work()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    torch.save(work(), sys.argv[2])
    kept = retaining()
    restored = retain_freed_memory(False) if applied else None
    print(json.dumps({"faults": faults, "applied": applied, "retaining": kept, "restored": restored,
                      "after_restore": retaining()}))
""")


def _probe(retain, tmp_path):
    path = tmp_path / f"out{retain}.pt"
    out = subprocess.run([sys.executable, "-c", PROBE, str(int(retain)), str(path)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]), path


def _huge_pages_always():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(allocator.glibc_malloc() is None, reason="mallopt is glibc-only")
def test_retaining_removes_page_faults_and_keeps_results(tmp_path):
    import torch

    default, p0 = _probe(False, tmp_path)
    kept, p1 = _probe(True, tmp_path)
    assert kept["applied"] and kept["retaining"] and kept["restored"] and not kept["after_restore"]
    assert not default["applied"]
    # Five repetitions, four ~43 MB temporaries each: about 10 500 faults per temporary by default (210 000 measured);
    # once memory is kept, none in steady state (0 measured).  The bound leaves room for one stray heap growth.
    assert torch.equal(torch.load(p0), torch.load(p1))
    if _huge_pages_always():  # 2 MiB pages: a few hundred faults either way, nothing to compare
        return
    assert default["faults"] > 100_000, default
    assert kept["faults"] < default["faults"] / 10, (kept, default)


def test_off_glibc_is_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.glibc_malloc() is None
    assert allocator.retain_freed_memory() is False
    assert allocator.retaining() is False


def test_unknown_libc_is_a_no_op(monkeypatch):
    class NoGlibc:  # a C library without glibc's version symbol, as musl
        pass

    monkeypatch.setattr(allocator, "_libc", lambda: NoGlibc())
    assert allocator.glibc_malloc() is None
    assert allocator.retain_freed_memory() is False


def test_provenance_records_the_setting():
    from uhop.provenance import collect_provenance

    assert collect_provenance()["machine"]["retain_freed_memory"] is allocator.retaining()

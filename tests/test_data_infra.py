"""uhop.data infrastructure: locations, offline errors, checksums, atomic builds, CLI, name errors.

Real-data tests need UHOP_DATA (CI always sets it); they are skipped with a visible reason otherwise.
Every test runs with UHOP_OFFLINE=1 and its own UHOP_CACHE (a temporary folder).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

import uhop.data as D
from uhop.data import cache as C
from uhop.data import checksums

DATA = os.environ.get("UHOP_DATA")
needs_data = pytest.mark.skipif(not DATA or not Path(DATA).is_dir(),
                                reason="UHOP_DATA is not set to the data folder: real-data tests skipped")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline_private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("UHOP_OFFLINE", "1")
    monkeypatch.setenv("UHOP_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------ locations and switches
def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("UHOP_DATA", raising=False)
    assert D.data_root() == tmp_path / "xdg" / "uhop"
    monkeypatch.setenv("UHOP_DATA", str(tmp_path / "env"))
    assert D.data_root() == tmp_path / "env"
    assert D.data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("UHOP_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.data_root() == tmp_path / "home" / ".cache" / "uhop"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.cache_dir() == tmp_path / "cache"  # UHOP_CACHE (set by the fixture) wins
    monkeypatch.delenv("UHOP_CACHE")
    assert D.cache_dir() == tmp_path / "xdg" / "uhop"
    assert (tmp_path / "xdg" / "uhop").is_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.cache_dir(create=False) == tmp_path / "home" / ".cache" / "uhop"


def test_offline_switch_wins(monkeypatch):
    assert D.offline()
    assert not D.download_allowed(None) and not D.download_allowed(True) and not D.download_allowed(False)
    monkeypatch.setenv("UHOP_OFFLINE", "0")
    assert not D.offline()
    assert D.download_allowed(None) and D.download_allowed(True) and not D.download_allowed(False)


# ------------------------------------------------------------------ missing data offline
@pytest.mark.parametrize("loader, dataset", [
    (lambda: D.load_mnist("train"), "mnist"),
    (lambda: D.load_cifar10("train"), "cifar10"),
    (lambda: D.load_cifar100("test"), "cifar100"),
    (lambda: D.load_tiny_imagenet("val"), "tiny_imagenet"),
    (lambda: D.load_time_series("ETTh1"), "ETTh1"),
    (lambda: D.sample_memories("mnist", 10, seed=0), "mnist"),
])
def test_missing_dataset_offline_is_one_clear_error(monkeypatch, tmp_path, loader, dataset):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("UHOP_DATA", str(empty))
    with pytest.raises(D.DatasetNotFoundError) as info:
        loader()
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.dataset == dataset and repr(dataset) in msg
    assert str(empty) in msg  # names the paths searched
    assert "UHOP_DATA" in msg  # and how to fix it
    assert "Traceback" not in msg and "download=True to download" not in msg
    if dataset in ("mnist", "cifar10", "cifar100"):
        assert "UHOP_OFFLINE" in msg


def test_available_on_empty_root(tmp_path):
    assert D.available(tmp_path) == {n: [] for n in D.DATASETS}


@needs_data
def test_available_on_data_root():
    got = D.available(DATA)
    assert got["mnist"] == ["torchvision"]
    assert "jpeg" in got["cifar10"] and "exact_subset" in got["cifar10"]
    assert "exact_subset" in got["cifar100"]
    assert "subset50" in got["tiny_imagenet"]
    assert all(got[n] == ["csv"] for n in ("ETTh1", "ETTm1", "WTH"))


# ------------------------------------------------------------------ checksums
def _copy_rel(rel: str, dst_root: Path) -> Path:
    dst = dst_root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(DATA) / rel, dst)
    return dst


@needs_data
def test_checksum_table_matches_sha256sums():
    listed = {}
    for line in (Path(DATA) / "SHA256SUMS").read_text().splitlines():
        h, rel = line.split(None, 1)
        listed[rel] = h
    for rel, known in checksums.KNOWN_FILES.items():
        assert listed[rel] == known.sha256, rel
        assert (Path(DATA) / rel).stat().st_size == known.size, rel


@needs_data
def test_corrupted_copy_is_refused(tmp_path):
    rel = "cifar100/cifar100_exact_subset.npz"
    p = _copy_rel(rel, tmp_path / "root")
    assert len(D.load_cifar100("test", root=tmp_path / "root", variant="exact_subset")) == 20  # intact copy works
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # flip one bit, same size
    p.write_bytes(bytes(raw))
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime invalidates the per-process cache
    with pytest.raises(D.DataIntegrityError) as info:
        D.load_cifar100("test", root=tmp_path / "root", variant="exact_subset")
    e = info.value
    assert isinstance(e, RuntimeError) and isinstance(e, ValueError)
    msg = str(e)
    assert str(p) in msg and checksums.KNOWN_FILES[rel].sha256 in msg and e.actual in msg
    assert e.actual != e.expected and len(e.actual) == 64
    assert "verify" in msg  # says how to check/fix


@needs_data
def test_truncated_file_is_refused(tmp_path):
    rel = "wth/WTH.csv"
    p = _copy_rel(rel, tmp_path / "root")
    with open(p, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(D.DataIntegrityError, match="truncated"):
        D.load_time_series("WTH", root=tmp_path / "root")


@needs_data
def test_cli_verify_and_list(tmp_path, capsys):
    from uhop.data.__main__ import main

    assert main(["verify", "--root", DATA]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS ") == len(checksums.KNOWN_FILES) and "\nFAIL" not in out
    assert main(["list", "--root", DATA]) == 0
    out = capsys.readouterr().out
    assert "jpeg, exact_subset" in out and "subset50" in out
    bad = tmp_path / "bad"
    p = _copy_rel("cifar100/cifar100_exact_subset.npz", bad)
    raw = bytearray(p.read_bytes())
    raw[100] ^= 0xFF
    p.write_bytes(bytes(raw))
    res = subprocess.run([sys.executable, "-m", "uhop.data", "verify", "--root", str(bad)], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL    cifar100/cifar100_exact_subset.npz" in res.stdout and "MISSING" in res.stdout
    # missing files (nothing corrupt) and a root that does not exist are failures too, with their own status
    assert main(["verify", "--root", str(tmp_path / "no" / "such" / "dir")]) == 2
    assert "does not exist" in capsys.readouterr().out
    (bad / "cifar100" / "cifar100_exact_subset.npz").unlink()
    assert main(["verify", "--root", str(bad)]) == 2


# ------------------------------------------------------------------ atomic, interruption-safe builds
def _small_tar(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    for i in range(20):
        (src / "a" / f"{i}.txt").write_text(str(i))
    arc = tmp_path / "small.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(src / "a", arcname="a")
    return arc


def test_interrupted_build_is_never_taken_as_complete(tmp_path):
    final = tmp_path / "c" / "thing"
    calls = []

    def failing(tmp):
        (tmp / "half.txt").write_text("half")
        calls.append(tmp)
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of an extraction

    with pytest.raises(KeyboardInterrupt):
        C.build_once(final, "tag1", failing)
    assert not final.exists() and not calls[0].exists()  # nothing left that could pass for a result
    assert not C.is_complete(final, "tag1")

    def good(tmp):
        (tmp / "full.txt").write_text("full")

    assert C.build_once(final, "tag1", good) == final
    assert (final / "full.txt").read_text() == "full" and C.is_complete(final, "tag1")
    assert C.build_once(final, "tag1", failing) == final  # complete: the builder is not called again
    assert len(calls) == 1
    assert not C.is_complete(final, "tag2")  # a different source tag forces a rebuild
    C.build_once(final, "tag2", good)
    assert C.is_complete(final, "tag2")


def test_unmarked_folder_is_rebuilt(tmp_path):
    arc = _small_tar(tmp_path)
    final = tmp_path / "c" / "small"
    (final / "a").mkdir(parents=True)
    (final / "a" / "0.txt").write_text("partial")  # as left by a non-atomic tool killed half-way
    C.extract_once(arc, final, "sha-x")
    assert sorted(p.name for p in (final / "a").iterdir()) == sorted(f"{i}.txt" for i in range(20))
    assert (final / "a" / "0.txt").read_text() == "0"


def test_killed_process_leaves_no_complete_folder(tmp_path):
    final = tmp_path / "c" / "big"
    started = tmp_path / "started"
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from uhop.data.cache import build_once
        def builder(tmp):
            (tmp / "part.bin").write_bytes(b"x" * 1000)
            Path({str(started)!r}).write_text("1")
            time.sleep(60)
        build_once(Path({str(final)!r}), "T", builder)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.time() + 60
        while not started.exists():
            assert proc.poll() is None and time.time() < deadline, "builder subprocess did not start"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the hardest interruption: no cleanup code runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = list(final.parent.glob(".big.tmp-*"))
    assert leftovers and not final.exists() and not C.is_complete(final, "T")
    C.build_once(final, "T", lambda tmp: (tmp / "ok").write_text("ok"))
    assert C.is_complete(final, "T") and (final / "ok").exists() and not (final / "part.bin").exists()
    assert not list(final.parent.glob(".big.tmp-*"))  # the stale temporary folder was cleaned up


@needs_data
def test_interrupted_mnist_staging_recovers(monkeypatch):
    import uhop.data.mnist as M

    real = M.shutil.copyfileobj

    def broken(src, dst, length=0):
        dst.write(src.read(1000))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(M.shutil, "copyfileobj", broken)
    with pytest.raises(OSError, match="simulated"):
        D.load_mnist("test")
    assert not list(D.cache_dir().glob("mnist-idx-*/MNIST"))  # no half-written folder under the final name
    monkeypatch.setattr(M.shutil, "copyfileobj", real)
    data = D.load_mnist("test")
    assert len(data) == 10_000


# ------------------------------------------------------------------ name errors
def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="mnist.*cifar10.*tiny_imagenet.*ETTh1"):
        D.load_images("imagenet")
    with pytest.raises(ValueError, match="'train', 'test'"):
        D.load_mnist("validation")
    with pytest.raises(ValueError, match="'auto', 'torchvision', 'jpeg', 'exact_subset'"):
        D.load_cifar10("train", variant="png")
    with pytest.raises(ValueError, match="'train', 'val'"):
        D.load_tiny_imagenet("test")
    with pytest.raises(ValueError, match="ETTh1.*ETTm1.*WTH"):
        D.time_series_splits("ETTh2", 96)
    with pytest.raises(ValueError, match="time-series"):
        D.load_images("ETTh1")
    assert D.canonical_name("CIFAR-10") == "cifar10" and D.canonical_name("TinyImageNet") == "tiny_imagenet"
    assert D.canonical_name("etth1") == "ETTh1"

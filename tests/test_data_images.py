"""uhop.data image loaders on the shipped real data (MNIST, CIFAR-10/100, Tiny ImageNet) and memory sampling.

Needs UHOP_DATA (skipped with a visible reason otherwise).  Slow one-off work (decompressing MNIST, extracting and
decoding the CIFAR-10 JPEG archive and the Tiny ImageNet zip) goes to a shared cache: $UHOP_CACHE if set, else the
user cache (~/.cache/uhop), so it happens once per machine, not once per test.
"""

from __future__ import annotations

import io
import os
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import uhop.data as D
from uhop.data import checksums

DATA = os.environ.get("UHOP_DATA")
pytestmark = pytest.mark.skipif(not DATA or not Path(DATA).is_dir(),
                                reason="UHOP_DATA is not set to the data folder: real-data tests skipped")
SHARED_CACHE = str(D.cache_dir(create=False))  # read before any test changes UHOP_CACHE

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
C10_TEST_0_19 = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("UHOP_OFFLINE", "1")


@pytest.fixture
def shared_cache(monkeypatch):
    monkeypatch.setenv("UHOP_CACHE", SHARED_CACHE)
    return Path(SHARED_CACHE)


@pytest.fixture
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("UHOP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _load_shared(fn, *args, **kw):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UHOP_OFFLINE", "1")
        mp.setenv("UHOP_CACHE", SHARED_CACHE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", D.ApproximateDataWarning)
            return fn(*args, **kw)


@pytest.fixture(scope="module")
def mnist_train():
    return _load_shared(D.load_mnist, "train")


@pytest.fixture(scope="module")
def c10_jpeg_train():
    return _load_shared(D.load_cifar10, "train", variant="jpeg")


@pytest.fixture(scope="module")
def c10_exact_train():
    return _load_shared(D.load_cifar10, "train", variant="exact_subset")


@pytest.fixture(scope="module")
def tiny():
    return {s: _load_shared(D.load_tiny_imagenet, s) for s in ("train", "val")}


# ------------------------------------------------------------------ MNIST
def test_mnist_train(mnist_train):
    d = mnist_train
    assert d.images.shape == (60_000, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.shape == (60_000,) and d.labels.dtype == torch.int64
    assert torch.bincount(d.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert int(d.labels[0]) == 5
    assert int(d.images.min()) == 0 and int(d.images.max()) == 255
    assert len(d.classes) == 10 and d.variant == "torchvision" and d.exact


def test_mnist_test_split_read_only_root_untouched(shared_cache):
    d = D.load_mnist("test")
    assert d.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(d.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert Path(d.source).is_relative_to(shared_cache)  # decompressed into the cache ...
    raw = Path(DATA) / "mnist" / "MNIST" / "raw"
    if not os.access(raw, os.W_OK):  # ... never into a read-only data root
        assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.gz" for n in checksums.MNIST_IDX)


# ------------------------------------------------------------------ CIFAR-10
def test_cifar10_exact_subset(c10_exact_train, private_cache):
    d = c10_exact_train
    assert d.images.shape == (200, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert d.variant == "exact_subset" and d.exact and d.indices.tolist() == list(range(200))
    assert d.classes == D.CIFAR10_CLASSES
    t = D.load_cifar10("test", variant="exact_subset")
    assert t.images.shape == (20, 3, 32, 32) and t.labels.tolist() == C10_TEST_0_19


def test_cifar10_jpeg_full_set(c10_jpeg_train, shared_cache):
    d = c10_jpeg_train
    assert d.images.shape == (50_000, 3, 32, 32) and d.images.dtype == torch.uint8
    assert torch.bincount(d.labels, minlength=10).tolist() == [5000] * 10
    assert d.variant == "jpeg" and d.exact is False
    assert "APPROXIMATE" in repr(d) and "jpeg" in d.describe()
    ds = d.to_dataset()
    assert ds.variant == "jpeg" and ds.exact is False
    t = _load_shared(D.load_cifar10, "test", variant="jpeg")
    assert t.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(t.labels, minlength=10).tolist() == [1000] * 10
    assert t.indices is None and "order" in t.note  # test order is documented as not original


def test_cifar10_jpeg_is_in_original_order(c10_jpeg_train, c10_exact_train):
    jp, ex = c10_jpeg_train, c10_exact_train
    assert torch.equal(jp.labels[:200], ex.labels)  # labels: exactly the original order
    err = (jp.images[:200].float() - ex.images.float()).abs().mean(dim=(1, 2, 3))  # per image, in 0..255 units
    assert err.max() < 15 and 4 < err.mean() < 8, err.mean()  # JPEG error ~6/255 (README: 5.86 mean, 9.66 max)
    wrong = (jp.images[1:201].float() - ex.images.float()).abs().mean()  # a wrong pairing is far worse
    assert wrong > 30


def test_cifar10_jpeg_warns_and_warm_load_is_fast(shared_cache, c10_jpeg_train):
    from uhop.data import imagedata

    imagedata._WARNED.discard(("cifar10", "jpeg"))
    checksums._VERIFIED.clear()  # as in a fresh process: hash the archive again
    t0 = time.perf_counter()
    with pytest.warns(D.ApproximateDataWarning, match="APPROXIMATE"):
        d = D.load_cifar10("train")  # auto -> jpeg on this root
    elapsed = time.perf_counter() - t0
    assert d.variant == "jpeg" and len(d) == 50_000
    assert elapsed < 4.0, f"warm CIFAR-10 JPEG load took {elapsed:.2f} s"


def test_cifar10_auto_falls_back_to_exact_subset(tmp_path, private_cache):
    rel = "cifar10/cifar10_exact_subset.npz"
    (tmp_path / "root" / "cifar10").mkdir(parents=True)
    (tmp_path / "root" / rel).write_bytes((Path(DATA) / rel).read_bytes())
    with pytest.warns(UserWarning, match="only the exact subset"):
        d = D.load_cifar10("train", root=tmp_path / "root")
    assert d.variant == "exact_subset" and len(d) == 200
    with pytest.raises(D.DatasetNotFoundError, match="cifar10-jpeg.tar.gz"):
        D.load_cifar10("train", root=tmp_path / "root", variant="jpeg")


# ------------------------------------------------------------------ CIFAR-100
def test_cifar100(private_cache):
    with pytest.raises(D.DatasetNotFoundError, match="variant='exact_subset'"):
        D.load_cifar100("test")  # auto never silently returns 20 images
    d = D.load_cifar100("test", variant="exact_subset")
    assert d.images.shape == (20, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [49, 33, 72, 51, 71, 92, 15, 14, 23, 0, 71, 75, 81, 69, 40, 43, 92, 97, 70, 53]
    assert len(d.classes) == 100 and [d.classes[i] for i in d.labels[:3]] == ["mountain", "forest", "seal"]
    with pytest.raises(D.DatasetNotFoundError, match="no 'train' images"):
        D.load_cifar100("train", variant="exact_subset")


# ------------------------------------------------------------------ Tiny ImageNet
def test_tiny_imagenet_subset(tiny):
    tr, va = tiny["train"], tiny["val"]
    for d, n in ((tr, 10_000), (va, 10_000)):
        assert d.images.shape == (n, 3, 64, 64) and d.images.dtype == torch.uint8
        assert d.labels.dtype == torch.int64 and int(d.labels.min()) == 0 and int(d.labels.max()) == 199
        assert torch.bincount(d.labels, minlength=200).tolist() == [50] * 200
        assert d.variant == "subset50" and d.exact and len(d.classes) == 200
    assert tr.meta["wnids"] == sorted(tr.meta["wnids"]) and len(set(tr.meta["wnids"])) == 200
    assert tr.meta["wnids"][0] == "n01443537" and tr.classes[0].startswith("goldfish")


def test_tiny_imagenet_labels_and_grayscale_against_the_zip(tiny):
    va, wnids = tiny["val"], tiny["train"].meta["wnids"]
    zf = zipfile.ZipFile(Path(DATA) / "tiny-imagenet" / "tiny-imagenet-200-subset50.zip")
    ann = {}
    for line in zf.read("tiny-imagenet-200/val/val_annotations.txt").decode().splitlines():
        f, w = line.split("\t")[:2]
        ann[int(f[4:-5])] = w
    assert [wnids[int(y)] for y in va.labels] == [ann[i] for i in range(10_000)]
    from PIL import Image

    for i in range(10_000):  # first grayscale validation JPEG
        im = Image.open(io.BytesIO(zf.read(f"tiny-imagenet-200/val/images/val_{i}.JPEG")))
        if im.mode == "L":
            break
    else:
        pytest.fail("no grayscale JPEG found in val")
    x = va.images[i]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.equal(x[0], torch.from_numpy(np.array(im)))


# ------------------------------------------------------------------ ImageData API
def test_imagedata_float_and_dataset(mnist_train):
    sub = mnist_train.subset(torch.arange(64))
    f = sub.float()
    assert f.dtype == torch.float32 and f.shape == (64, 1, 28, 28) and 0.0 <= float(f.min()) and float(f.max()) <= 1.0
    assert torch.allclose(f * 255, sub.images.float())
    ds = sub.to_dataset(transform=lambda x: x * 2 - 1)
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 5 and float(x.min()) >= -1
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=16)))
    assert xb.shape == (16, 1, 28, 28) and yb.dtype == torch.int64
    with pytest.raises(ValueError, match="uint8"):
        D.ImageData(f, sub.labels, sub.classes, "mnist", "train", "x", True, "")


# ------------------------------------------------------------------ memory sets
def test_sample_memories_reproducible(shared_cache, mnist_train):
    a = D.sample_memories("mnist", 50, seed=3)
    b = D.sample_memories("mnist", 50, seed=3)
    c = D.sample_memories("mnist", 50, seed=4)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.memories, b.memories)
    assert not torch.equal(a.indices, c.indices)
    assert a.memories.shape == (50, 784) and a.memories.dtype == torch.float32
    assert float(a.memories.min()) >= 0 and float(a.memories.max()) <= 1 and float(a.memories.max()) > 0.99
    assert a.indices.dtype == torch.int64 and len(set(a.indices.tolist())) == 50
    assert a.image_shape == (1, 28, 28) and a.variant == "torchvision" and a.exact
    assert torch.equal(a.memories, mnist_train.images[a.indices].reshape(50, -1).float() / 255)
    assert torch.equal(a.labels, mnist_train.labels[a.indices])
    assert torch.equal(a.images()[0], mnist_train.float()[a.indices[0]])
    expected = torch.randperm(60_000, generator=torch.Generator().manual_seed(3))[:50]
    assert torch.equal(a.indices, expected)


def test_sample_memories_cifar_and_errors(private_cache):
    m = D.sample_memories("cifar10", 200, seed=0, variant="exact_subset")
    assert m.memories.shape == (200, 3072) and sorted(m.indices.tolist()) == list(range(200))
    assert m.variant == "exact_subset" and m.exact
    with pytest.raises(ValueError, match=r"M=201.*only 200 images"):
        D.sample_memories("cifar10", 201, seed=0, variant="exact_subset")
    with pytest.raises(ValueError, match="positive"):
        D.sample_memories("cifar10", 0, seed=0, variant="exact_subset")
    with pytest.raises(ValueError, match="unknown dataset"):
        D.sample_memories("svhn", 10, seed=0)


def test_sample_memories_cifar10_jpeg(shared_cache, c10_jpeg_train):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", D.ApproximateDataWarning)
        m = D.sample_memories("cifar10", 100, seed=1)
    assert m.memories.shape == (100, 3072) and m.variant == "jpeg" and m.exact is False
    assert torch.equal(m.memories, c10_jpeg_train.images[m.indices].reshape(100, -1).float() / 255)


def test_tiny_imagenet_extracted_folder_is_used_first(tmp_path, private_cache, tiny):
    extracted = Path(SHARED_CACHE).glob("tiny-imagenet-subset50-*/tiny-imagenet-200")
    folder = next((p for p in extracted if p.is_dir()), None)
    assert folder is not None, "the subset extraction should exist in the shared cache"
    root = tmp_path / "root"
    root.mkdir()
    (root / "tiny-imagenet-200").symlink_to(folder, target_is_directory=True)
    assert D.available(root)["tiny_imagenet"] == ["full"]
    d = D.load_tiny_imagenet("val", root=root)  # auto: an extracted folder wins over any zip
    assert d.variant == "partial" and "10000 train images" in d.note  # not the complete 100,000-image set
    assert torch.equal(d.images, tiny["val"].images) and torch.equal(d.labels, tiny["val"].labels)

"""The device fast path (crop-with-padding + flip from resident uint8 images) and the exhaustive view cache,
run on the CPU through the same code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gendistill.data import Split, load_dataset
from gendistill.data.gpu_augment import (
    DeviceImageLoader,
    crop_flip,
    num_views,
    to_pixels,
    view_index,
    view_params,
)
from gendistill.teachers import FrozenTeacher
from gendistill.view_cache import ExhaustiveViewCache


def cifar100_folder(path, n_train=40, n_test=20):
    """A tiny folder in CIFAR-100's 'python version' format (random pixels, 100 fine labels)."""
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": list(rng.integers(0, 100, n))}
        (path / name).write_bytes(pickle.dumps(batch, protocol=2))
    return path


def test_crop_flip_equals_pad_crop_flip_per_sample():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8)
    offsets = torch.randint(0, 9, (9, 2))
    flips = torch.rand(9) < 0.5
    out = crop_flip(x, offsets, flips, 4)
    for i in range(9):
        dy, dx = offsets[i].tolist()
        ref = F.pad(x[i], (4, 4, 4, 4))[:, dy:dy + 8, dx:dx + 8]
        assert torch.equal(out[i], ref.flip(-1) if flips[i] else ref)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_view_index_round_trip_and_count():
    v = torch.arange(num_views(4))
    assert len(v) == 162 and torch.equal(view_index(*view_params(v, 4), 4), v)


@pytest.fixture()
def cifar(tmp_path):
    return load_dataset("cifar100", root=str(cifar100_folder(tmp_path)))


def test_images_stay_uint8_and_the_centre_view_is_the_standardised_image(cifar):
    tr = cifar.train
    assert tr.pixels is not None
    loader = DeviceImageLoader(tr.x, tr.y, batch_size=16, seed=0, device="cpu", pixels=tr.pixels)
    assert loader.images.dtype == torch.uint8 and torch.equal(loader.images, to_pixels(tr.x, tr.pixels))
    centre = int(view_index(torch.tensor([[4, 4]]), torch.tensor([False]), 4))
    torch.testing.assert_close(loader.inputs(centre, 0, 40), tr.x, atol=1e-5, rtol=0)


def _epoch(loader):
    return [(x.clone(), y.clone(), i.clone(), v.clone()) for x, y, i, v in loader]


def test_augmentation_is_determined_by_the_seed_and_resumes(cifar):
    tr = cifar.train
    make = lambda seed: DeviceImageLoader(tr.x, tr.y, batch_size=16, seed=seed, device="cpu", pixels=tr.pixels)  # noqa: E731
    a, b, c = _epoch(make(3)), _epoch(make(3)), _epoch(make(4))
    assert all(torch.equal(p, q) for s, t in zip(a, b) for p, q in zip(s, t))
    assert not all(torch.equal(s[3], t[3]) for s, t in zip(a, c))
    first = make(5)
    _epoch(first)
    state = first.state_dict()
    again = make(0)
    again.load_state_dict(state)
    assert all(torch.equal(p, q) for s, t in zip(_epoch(first), _epoch(again)) for p, q in zip(s, t))


def _teacher():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(16, 100))
    return FrozenTeacher(net)


@pytest.mark.parametrize("mmap", [False, True])
def test_exhaustive_cache_lookup_equals_the_live_teacher_on_the_same_views(cifar, tmp_path, mmap):
    tr = cifar.train
    loader = DeviceImageLoader(tr.x, tr.y, batch_size=16, seed=0, device="cpu", pixels=tr.pixels)
    live = _teacher()
    prefix = tmp_path / "cache" / "views"
    cache = ExhaustiveViewCache.build(live, loader, prefix=prefix if mmap else None, mmap_mb=0.0 if mmap else 1e9,
                                      batch_size=500)
    assert cache.logits.shape == (40, 162, 100)
    assert ("memory-mapped" in cache.how) == mmap
    for x, _, idx, view in loader:
        got = cache(x, idx, view).logits
        want = live(x).logits
        torch.testing.assert_close(got, want.half().float(), atol=1e-3, rtol=1e-3)  # float16 storage
    if mmap:  # a second build from the same teacher and images reuses the file
        again = ExhaustiveViewCache.build(live, loader, prefix=prefix, mmap_mb=0.0)
        assert "reused" in again.how and torch.equal(again.logits, cache.logits)
        other = _teacher()
        with torch.no_grad():
            other.model[0].bias.add_(1)
        assert "reused" not in ExhaustiveViewCache.build(other, loader, prefix=prefix, mmap_mb=0.0).how


def test_lineage_with_device_augmentation_distils_from_the_exhaustive_cache(cifar, tmp_path):
    import gendistill as gd

    train = {"epochs": 1, "batch_size": 16, "device": "cpu", "optimizer": "sgd", "lr": 0.05,
             "augment": [{"name": "crop_flip", "padding": 4}], "fidelity_samples": 0}
    result = gd.Lineage(student={"name": "cnn2d", "width": 4}, generations=1, objective="hinton", train=train,
                        progress="off").fit(cifar, out=tmp_path / "run")
    gen1 = result.generations[1]
    assert "exhaustive view cache (40 samples x 162 views x 100 logits" in gen1["teacher_outputs"]
    assert np.isfinite(gen1["test_acc"])


def test_crop_flip_composes_with_other_augmentations_on_the_cpu_plan():
    from gendistill.data.augment import AugmentPlan, build_augmentations

    x = torch.randn(6, 3, 8, 8)
    plan = AugmentPlan(build_augmentations([{"name": "crop_flip", "padding": 2}, {"name": "noise", "std": 0.1}]), x,
                       views=2, seed=0)
    out, view, _ = plan.batch(x, torch.arange(6))
    assert out.shape == x.shape and view is not None


def test_crop_flip_on_non_images_is_a_config_error():
    import gendistill as gd
    from gendistill.data import DatasetBundle
    from gendistill.errors import ConfigError

    data = DatasetBundle("flat", Split(torch.randn(8, 5), torch.randint(0, 2, (8,))),
                         Split(torch.randn(4, 5), torch.randint(0, 2, (4,))), 2, (5,))
    with pytest.raises(ConfigError, match="crop_flip needs an in-memory image split"):
        gd.Lineage(student="mlp", generations=0, train={"epochs": 1, "device": "cpu",
                                                         "augment": ["crop_flip"]}, progress="off").fit(data)


def test_imagefolder_images_take_the_device_path_as_uint8(image_folder):
    data = load_dataset("imagefolder", root=str(image_folder), size=8)
    assert data.train.pixels is not None
    loader = DeviceImageLoader(data.train.x, data.train.y, batch_size=4, seed=0, device="cpu",
                               pixels=data.train.pixels, padding=2)
    assert loader.images.dtype == torch.uint8
    centre = int(view_index(torch.tensor([[2, 2]]), torch.tensor([False]), 2))
    torch.testing.assert_close(loader.inputs(centre, 0, len(data.train)), data.train.x, atol=1e-5, rtol=0)
    assert sum(len(b[0]) for b in loader) == len(data.train)

"""Local image folders: CIFAR's pickled batches through a restricted unpickler, and ImageFolder."""

import pickle

import numpy as np
import pytest

from gendistill.data import load_dataset
from gendistill.errors import DataError


def _cifar_folder(tmp_path, n=6):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    return tmp_path


def test_cifar10_folder_loads(tmp_path):
    d = load_dataset("cifar10", root=str(_cifar_folder(tmp_path)))
    assert len(d.train) == 30 and len(d.test) == 6 and d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert abs(float(d.train.x.mean())) < 1e-4  # standardised with the training statistics


def test_cifar_pickle_with_code_is_refused_not_run(tmp_path):
    folder = _cifar_folder(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="not a CIFAR batch file"):
        load_dataset("cifar10", root=str(folder))
    assert not marker.exists()


def test_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="point data.root at the extracted"):
        load_dataset("cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagefolder", root=str(tmp_path / "nowhere"))


def test_imagefolder(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("test", 2)):
        for cls, colour in (("cat", 255), ("dog", 0)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10, 12), (colour, i * 10, 0)).save(tmp_path / split / cls / f"{i}.png")
    d = load_dataset("imagefolder", root=str(tmp_path), size=8)
    assert d.num_classes == 2 and d.input_shape == (3, 8, 8) and len(d.train) == 6 and len(d.test) == 4
    assert d.train.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_imagefolder_read_from_disk_equals_in_memory(image_folder):
    from gendistill.data import DatasetSplit

    root = image_folder
    mem = load_dataset("imagefolder", root=str(root), size=8)
    disk = load_dataset("imagefolder", root=str(root), size=8, in_memory=False, workers=0)
    assert isinstance(disk.train, DatasetSplit) and len(disk.train) == len(mem.train) == 8
    assert disk.train.y.tolist() == mem.train.y.tolist()
    head = disk.train.head(8)
    assert np.allclose(head.x.numpy(), mem.train.x.numpy(), atol=1e-6)


def test_imagefolder_corrupt_image_is_one_line(image_folder):
    root = image_folder
    (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        load_dataset("imagefolder", root=str(root), size=8)

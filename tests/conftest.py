import os

import pytest

os.environ.setdefault("GENDISTILL_CACHE", os.path.join(os.path.dirname(__file__), ".cache"))


@pytest.fixture
def tiny_data():
    from gendistill.data import load_dataset

    return load_dataset("synthetic", num_classes=4, dim=8, num_train=256, num_test=128, separation=2.0, seed=0)


@pytest.fixture
def fast_train():
    from gendistill.config import TrainConfig

    return TrainConfig(epochs=4, batch_size=64, lr=0.01, fidelity_samples=64)


@pytest.fixture
def tiny_config_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        """
name: tiny
data: {name: synthetic, num_classes: 4, dim: 8, num_train: 256, num_test: 128}
model: {name: mlp, width: 32}
generations: {count: 2, teacher: previous}
objective: {preset: ban+l, temperature: 2.0}
train: {epochs: 3, batch_size: 64, lr: 0.01, fidelity_samples: 32}
"""
    )
    return path


@pytest.fixture
def image_folder(tmp_path):
    """A tiny ImageFolder tree: root/{train,test}/{cat,dog}/<i>.png (4 train and 2 test images per class)."""
    from PIL import Image

    root = tmp_path / "images"
    for split, n in (("train", 4), ("test", 2)):
        for cls, colour in (("cat", 255), ("dog", 0)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10, 12), (colour, i * 10, (i * 37) % 256)).save(root / split / cls / f"{i}.png")
    return root

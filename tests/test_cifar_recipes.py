"""Every CIFAR-100 recipe in examples/cifar100 loads, and runs end to end for two epochs on a tiny fake folder.

The recipes' models are the full CIFAR ones, so the runs use 8 training images; the cheapest recipe of each
kind runs in the default suite, every recipe under ``-m slow``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from gendistill.config import load_config
from gendistill.runner import run_config

RECIPES = sorted((Path(__file__).parents[1] / "examples" / "cifar100").glob("*.yaml"))
FAST = {"kd_resnet56_resnet20", "dkd_resnet56_resnet20", "crd_resnet56_resnet20", "fidelity_resnet56_augment"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar-100-python")
    rng = np.random.default_rng(0)
    for name, n in (("train", 8), ("test", 4)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(rng.integers(0, 100, n))}
        (path / name).write_bytes(pickle.dumps(batch, protocol=2))
    return path


def test_the_recipes_are_there():
    names = {p.stem for p in RECIPES}
    for method in ("kd", "dkd", "crd"):
        for pair in ("resnet32x4_resnet8x4", "wrn_40_2_wrn_16_2", "resnet56_resnet20", "vgg13_vgg8"):
            assert f"{method}_{pair}" in names
    assert {"ban_densenet", "fidelity_resnet56_augment", "fidelity_resnet56_noaugment"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_with_the_published_schedule(recipe):
    cfg = load_config(recipe)
    assert cfg.data.name == "cifar100" and "Published" in recipe.read_text()
    if recipe.stem.split("_")[0] in ("kd", "dkd", "crd"):
        t = cfg.train
        assert (t.epochs, t.batch_size, t.optimizer, t.lr, t.momentum, t.weight_decay) == (240, 64, "sgd", 0.05, 0.9, 5e-4)
        assert (t.schedule, t.milestones, t.gamma) == ("multistep", [150, 180, 210], 0.1)


def _run(recipe, folder, tmp_path):
    overrides = [f"data.root={folder}", "train.epochs=2", "train.batch_size=4", "train.device=cpu",
                 "train.fidelity_samples=0", "train.speed_figures=false", "train.kd_warmup_epochs=0", "train.lr=0.01"]
    if recipe.stem.startswith("ban"):
        overrides += ["generations.count=2", "model.name=densenet_bc_100_12"]
    if recipe.stem.startswith("crd"):
        overrides += ["objective.1.num_negatives=4"]
    if "crop_flip" in recipe.read_text():  # 18 views instead of 162: the teacher cache is built in seconds
        overrides += ["train.augment=[{name: crop_flip, padding: 1}]"]
    if "milestones" in recipe.read_text():
        overrides += ["train.milestones=[1]"]
    cfg = load_config(recipe, overrides)
    root, summary, _ = run_config(cfg, out=tmp_path / "run", progress="off")
    gens = summary["generations"]
    assert len(gens) == cfg.generations.count + 1
    assert all(g["epochs"] == 2 and np.isfinite(g["test_acc"]) and g["macs"] > 0 for g in gens)
    return gens


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem in FAST], ids=lambda p: p.stem)
def test_recipe_runs_two_epochs_on_a_tiny_folder(recipe, folder, tmp_path):
    gens = _run(recipe, folder, tmp_path)
    if "crop_flip" in recipe.read_text() and not recipe.stem.startswith("crd"):
        assert "exhaustive view cache (8 samples x 18 views x 100 logits" in gens[1]["teacher_outputs"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem not in FAST], ids=lambda p: p.stem)
def test_every_recipe_runs_two_epochs_on_a_tiny_folder(recipe, folder, tmp_path):
    _run(recipe, folder, tmp_path)

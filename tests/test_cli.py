"""The CLI as a user runs it (subprocess), config validation, the run-directory contract, datasets."""

import json
import subprocess
import sys

import pytest
import yaml

from gendistill.config import load_config
from gendistill.errors import ConfigError


def gendistill(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gendistill", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_run_writes_the_run_directory(tiny_config_yaml, tmp_path):
    out = tmp_path / "run"
    r = gendistill("run", str(tiny_config_yaml), "--out", str(out), "--set", "generations.count=1", "--progress", "lines")
    assert r.returncode == 0, r.stderr
    assert "gen0" in r.stdout and "gen1" in r.stdout and "agree(teacher)" in r.stdout
    assert "[gen1] epoch 3/3" in r.stderr  # plain progress lines when not a terminal
    for f in ["config.yaml", "summary.json", "gen0/model.safetensors", "gen0/metrics.json", "gen0/history.csv",
              "gen1/model.safetensors", "gen1/metrics.json", "gen1/history.csv"]:
        assert (out / f).exists(), f
    assert not (out / "gen2").exists() and not list(out.rglob("*.tmp")) and not (out / "gen1/checkpoint.pt").exists()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["generations"]["count"] == 1 and saved["objective"]["temperature"] == 2.0
    summary = json.loads((out / "summary.json").read_text())
    g1 = summary["generations"][1]
    for key in ["gen", "arch", "teacher", "test_acc", "test_nll", "test_ece", "agreement_teacher", "kl_teacher", "agreement_gen0"]:
        assert key in g1
    assert g1["teacher"] == "gen0" and summary["generations"][0]["teacher"] is None
    header = (out / "gen1/history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "train_ce", "train_kd", "train_acc", "test_acc", "holdout_agreement"} <= set(header)

    # a second run into the same directory is refused; --resume reuses everything
    again = gendistill("run", str(tiny_config_yaml), "--out", str(out), "--set", "generations.count=1")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    resumed = gendistill("run", str(tiny_config_yaml), "--out", str(out), "--set", "generations.count=1", "--resume", "--progress", "off")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["generations"][1]["test_acc"] == g1["test_acc"]
    other = gendistill("run", str(tiny_config_yaml), "--out", str(out), "--set", "generations.count=2", "--resume")
    assert other.returncode == 2 and "different config" in other.stderr


@pytest.mark.parametrize(
    "override, needle",
    [
        ("generations.count=-1", "generations.count"),
        ("objective.temperature=0", "objective.temperature: Input should be greater than 0"),
        ("model.name=resnet9000", "unknown model 'resnet9000'; available: "),
        ("train.epochs=many", "train.epochs"),
        ("train.optimiser=sgd", "unknown key 'train.optimiser'; allowed here: epochs"),
        ("generations.teacher=best", "'previous', 'ensemble' or 'original'"),
        ("objective=[{term: kd, temperature: -2}]", "objective.kd: temperature must be > 0"),
        ("objective=[{term: nope}]", "unknown method 'nope'"),
        ("data.name=imagenet", "unknown dataset 'imagenet'"),
        ("model.kernel=3", "unknown option 'kernel' for model 'mlp'"),
    ],
)
def test_config_errors_are_one_clear_line(tiny_config_yaml, override, needle):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(tiny_config_yaml, [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_config_error_exit_code_and_no_traceback(tiny_config_yaml, tmp_path):
    r = gendistill("run", str(tiny_config_yaml), "--set", "objective.temperature=-1", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: config error: objective.temperature")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {epochs: 3\n")
    r = gendistill("run", str(bad))
    assert r.returncode == 2 and "not valid YAML" in r.stderr and "Traceback" not in r.stderr
    r = gendistill("run", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_cli_refuses_pickled_teacher(tiny_config_yaml, tmp_path):
    import torch

    path = tmp_path / "teacher.pt"
    torch.save({"fc.weight": torch.zeros(4, 32)}, path)
    r = gendistill("run", str(tiny_config_yaml), "--set", f"generations.gen0_checkpoint={path}", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "never unpickles" in r.stderr and "Traceback" not in r.stderr


def test_default_config_is_the_documented_lineage():
    cfg = load_config()
    assert cfg.data.name == "mnist1d" and cfg.model.name == "cnn1d"
    assert cfg.generations.count == 3 and cfg.generations.teacher == "previous"
    cfg5 = load_config(None, ["generations.count=5", "seeds=[0,1,2]"])
    assert cfg5.generations.count == 5 and cfg5.seeds == [0, 1, 2]


def test_list_commands():
    r = gendistill("list", "methods")
    assert r.returncode == 0 and "kd" in r.stdout and "Hinton" in r.stdout and "ban+l" in r.stdout
    r = gendistill("list", "models")
    assert r.returncode == 0 and all(m in r.stdout for m in ("mlp", "cnn1d", "cnn2d"))
    r = gendistill("list", "datasets")
    assert r.returncode == 0 and all(d in r.stdout for d in ("mnist1d", "digits", "synthetic"))
    assert gendistill("list", "widgets").returncode == 2


def test_mnist1d_is_generated_locally_and_cached(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setenv("GENDISTILL_CACHE", str(tmp_path))
    monkeypatch.setattr(mnist1d.data, "get_dataset", lambda *a, **k: pytest.fail("must not call the downloader"))
    from gendistill.data import load_dataset

    a = load_dataset("mnist1d", num_samples=200, seed=3)
    assert len(a.train) == 160 and len(a.test) == 40 and a.input_shape == (1, 40) and a.num_classes == 10
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1
    b = load_dataset("mnist1d", num_samples=200, seed=3)
    assert b.train.x.equal(a.train.x)
    c = load_dataset("mnist1d", num_samples=200, seed=4, val_fraction=0.25)
    assert not c.test.x.equal(a.test.x) and len(c.val) == 40 and len(c.train) == 120


def test_digits_and_synthetic():
    from gendistill.data import load_dataset

    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and len(d.train) + len(d.test) == 1797
    s1, s2 = load_dataset("synthetic", seed=5), load_dataset("synthetic", seed=5)
    assert s1.train.x.equal(s2.train.x)

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
        ("model.name=resnet9000", "unknown model 'resnet9000' (did you mean 'resnet20'?); available: "),
        ("train.epochs=many", "train.epochs"),
        ("train.optimiser=sgd", "unknown key 'train.optimiser'; allowed here: epochs"),
        ("generations.teacher=best", "'previous', 'ensemble' or 'original'"),
        ("objective=[{term: kd, temperature: -2}]", "objective.kd: temperature must be > 0"),
        ("objective=[{term: nope}]", "unknown method 'nope'"),
        ("data.name=imagenet", "unknown dataset 'imagenet'"),
        ("model.kernel=3", "unknown option 'kernel' for model 'mlp'"),
        ("data.num_train=abc", "data: option 'num_train' of dataset 'synthetic' must be an integer, got 'abc'"),
        ("data.separation=far", "option 'separation' of dataset 'synthetic' must be a number, got 'far'"),
        ("objective=[{term: kd, weight: -1}]", "objective.kd.weight must be a finite number >= 0, got -1.0"),
        ("train.device=tpu", "train.device: must be auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps (got 'tpu')"),
        ("train.snapshot_epochs=[9]", "train: snapshot_epochs [9] lie outside training (1..3)"),
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
    r = gendistill("list", "schemes")
    assert r.returncode == 0 and r.stdout.splitlines()[0].split() == ["name", "kind", "paper"] and "rco" in r.stdout
    r = gendistill("list", "--help")
    assert r.returncode == 0 and "schemes" in r.stdout


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


@pytest.mark.parametrize(
    "config, needle",
    [
        ("data: {name: digits}", "error: model cnn1d expects 1-D signals (N, C, L) but dataset digits gives inputs of "
                                 "shape (1, 8, 8); use cnn2d, mlp, resnet_cifar or a CIFAR zoo model (gendistill list models)"),
        ("model: {name: cnn2d}\ndata: {num_samples: 200}", "model cnn2d expects images (N, C, H, W) but dataset "
                                                           "mnist1d gives inputs of shape (1, 40); use cnn1d or mlp"),
        ("model: {name: resnet_cifar}\ndata: {num_samples: 200}", "model resnet_cifar expects images (N, C, H, W)"),
        ("model: {name: cnn1d, width: 0}\ndata: {num_samples: 200}", "model 'cnn1d' (width=0): width must be >= 1, got 0"),
        ("model: {name: mlp, depth: -1}\ndata: {num_samples: 200}", "mlp needs width >= 1 and depth >= 1"),
        ("data: {num_samples: -5}", "data (mnist1d: num_samples=-5): num_samples must be >= 20, got -5"),
        ("data: {num_samples: 200, train_split: 1.5}", "train_split must be in (0, 1), got 1.5"),
        ("data: {name: digits, test_fraction: 2}\nmodel: {name: cnn2d}", "test_fraction must be in (0, 1), got 2"),
        ("data: {name: synthetic, num_classes: 0}\nmodel: {name: mlp}", "synthetic needs num_classes >= 2"),
        ("data: {name: imagefolder, root: ., size: 0}\nmodel: {name: cnn2d}", "size must be >= 1 (pixels per side), got 0"),
        ("train: {device: tpu}", "train.device: must be auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps (got 'tpu')"),
        ("data: {num_samples: 200}\nscheme: {name: rco}\ntrain: {epochs: 2, snapshot_epochs: [3]}",
         "snapshot_epochs [3] lie outside training (1..2)"),
        ("data: {num_samples: 200}\nscheme: {name: dml, peers: 1}", "dml needs peers >= 2"),
    ],
)
def test_bad_model_data_combos_and_values_exit_2_before_the_run_dir(tmp_path, config, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(config + "\n")
    out = tmp_path / "run"
    r = gendistill("run", str(path), "--out", str(out), "--progress", "off")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_eval_refuses_a_bad_device_and_the_wrong_dataset(tmp_path):
    from gendistill.engine.checkpoint import save_model
    from gendistill.models import create_model

    path = tmp_path / "m.safetensors"
    save_model(create_model("cnn1d", 10, (1, 40), width=8), path,
               {"gen": 0, "arch": "cnn1d(width=8)", "num_classes": 10, "model_spec": {"name": "cnn1d", "width": 8}})
    r = gendistill("eval", "--teacher", str(path), "--student", str(path), "--data", "digits")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"teacher checkpoint {str(path)!r}: model cnn1d expects 1-D signals (N, C, L) but dataset digits" in r.stderr
    assert "evaluate it on the dataset it was trained on" in r.stderr
    r = gendistill("eval", "--teacher", str(path), "--student", str(path), "--data", "mnist1d", "--device", "tpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--device must be auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps, got 'tpu'" in r.stderr


def test_a_failed_start_does_not_block_the_corrected_rerun(tiny_config_yaml, tmp_path, capsys):
    from gendistill.runner import prepare_run_dir, run_config

    out = tmp_path / "run"
    r = gendistill("run", str(tiny_config_yaml), "--out", str(out), "--set", "generations.gen0_checkpoint=missing.safetensors")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert (out / "config.yaml").exists()  # left behind, but it holds nothing worth protecting
    root, summary, _ = run_config(load_config(tiny_config_yaml, ["generations.count=1"]), out=out, progress="off")
    assert "starting over in it" in capsys.readouterr().err
    assert len(summary["generations"]) == 2 and (out / "gen1" / "metrics.json").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["generations"]["gen0_checkpoint"] is None
    # a directory with finished generations is still protected, and so is one gendistill did not write
    with pytest.raises(ConfigError, match="already holds a run"):
        prepare_run_dir(load_config(tiny_config_yaml), out, resume=False)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "config.yaml").write_text("x: 1\n")
    (other / "notes.txt").write_text("keep me\n")
    with pytest.raises(ConfigError, match="already holds a run"):
        prepare_run_dir(load_config(tiny_config_yaml), other, resume=False)
    assert (other / "notes.txt").exists()


def test_resume_a_run_saved_before_keys_with_defaults_were_added(tiny_config_yaml, tmp_path):
    from gendistill.runner import run_config

    out = tmp_path / "run"
    cfg = load_config(tiny_config_yaml, ["generations.count=1"])
    _, first, _ = run_config(cfg, out=out, progress="off")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("snapshot_epochs", "augment", "augment_views", "teacher_cache"):
        del saved["train"][key]  # an older version wrote no such keys
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    _, again, _ = run_config(cfg, out=out, resume=True, progress="off")
    assert again["generations"][1]["test_acc"] == first["generations"][1]["test_acc"]
    assert again["generations"][1].get("resumed") is True
    with pytest.raises(ConfigError, match="different config"):
        run_config(load_config(tiny_config_yaml, ["generations.count=1", "train.lr=0.5"]), out=out, resume=True)

"""`gendistill eval` (as a user runs it) and the bundled experiment configs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gendistill import metrics as M
from gendistill.analysis.evaluate_cli import parse_arch_string, parse_model_option
from gendistill.cli import app
from gendistill.config import load_config
from gendistill.data import load_dataset
from gendistill.engine.checkpoint import save_model
from gendistill.engine.evaluate import predict_logits
from gendistill.models import build_model

EXPERIMENTS = sorted((Path(__file__).parents[1] / "examples" / "experiments").glob("*.yaml"))
DATA = ["--data", "synthetic", "--set", "data.num_classes=4", "--set", "data.dim=8", "--set", "data.num_train=96",
        "--set", "data.num_test=64"]


def gendistill(*args):
    return subprocess.run([sys.executable, "-m", "gendistill", *args], capture_output=True, text=True, timeout=120)


def _data():
    return load_dataset("synthetic", num_classes=4, dim=8, num_train=96, num_test=64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two differently initialised MLPs saved as the lineage saves them, and one saved without metadata."""
    d = tmp_path_factory.mktemp("ckpt")
    data = _data()
    models = {}
    for name, seed, width in [("a", 0, 16), ("b", 1, 8)]:
        torch.manual_seed(seed)
        spec = {"name": "mlp", "width": width}
        model = build_model(spec, data.num_classes, data.input_shape)
        save_model(model, d / f"{name}.safetensors", {"gen": seed, "arch": f"mlp(width={width})", "num_classes": 4,
                                                      "model_spec": spec})
        models[name] = model
    save_model(models["a"], d / "bare.safetensors")
    save_model(models["a"], d / "legacy.safetensors", {"arch": "mlp(width=16)", "num_classes": 4})  # no model_spec
    return d, models


def test_eval_of_a_model_with_itself_is_perfect_fidelity(checkpoints, tmp_path):
    d, _ = checkpoints
    out = tmp_path / "self.json"
    r = CliRunner().invoke(app, ["eval", "--teacher", str(d / "a.safetensors"), "--student",
                                 str(d / "legacy.safetensors"), *DATA, "--json", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "agree(t,s)" in r.stdout and "train" in r.stdout
    res = json.loads(out.read_text())
    assert res["fidelity"]["agreement_teacher"] == 1.0 and res["fidelity"]["agreement_teacher_train"] == 1.0
    assert res["fidelity"]["kl_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert res["fidelity"]["kl_teacher_train"] == pytest.approx(0.0, abs=1e-6)
    assert res["student"]["model_spec"] == {"name": "mlp", "width": 16}  # parsed from the arch string
    for k in ("acc", "nll", "brier", "ece"):
        assert res["teacher"][f"test_{k}"] == res["student"][f"test_{k}"]


def test_eval_numbers_equal_the_metrics_module(checkpoints, tmp_path):
    d, models = checkpoints
    out = tmp_path / "ab.json"
    r = gendistill("eval", "--teacher", str(d / "a.safetensors"), "--student", str(d / "b.safetensors"), *DATA,
                   "--json", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    data = _data()
    logits = {role: {s: predict_logits(m, getattr(data, s).x, device="cpu") for s in ("test", "train")}
              for role, m in (("teacher", models["a"]), ("student", models["b"]))}
    for role in ("teacher", "student"):
        for split in ("test", "train"):
            y = getattr(data, split).y
            z = logits[role][split]
            assert res[role][f"{split}_acc"] == pytest.approx(M.accuracy(z, y), abs=1e-6)
            assert res[role][f"{split}_nll"] == pytest.approx(M.nll(z, y), rel=1e-5)
            assert res[role][f"{split}_brier"] == pytest.approx(M.brier(z, y), rel=1e-5)
            assert res[role][f"{split}_ece"] == pytest.approx(M.ece(z, y), rel=1e-5, abs=1e-7)
    t, s = logits["teacher"], logits["student"]
    assert res["fidelity"]["agreement_teacher"] == pytest.approx(M.agreement(t["test"], s["test"]), abs=1e-6)
    assert res["fidelity"]["kl_teacher"] == pytest.approx(M.kl_teacher_student(t["test"], s["test"]), rel=1e-5)
    assert res["fidelity"]["agreement_teacher_train"] == pytest.approx(M.agreement(t["train"], s["train"]), abs=1e-6)
    assert res["fidelity"]["kl_teacher_train"] == pytest.approx(M.kl_teacher_student(t["train"], s["train"]), rel=1e-5)
    assert res["fidelity"]["kl_teacher"] > 0 and res["dataset"]["test_samples"] == 64


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "student checkpoint"),
        ("pickle", "never unpickles"),
        ("classes", "trained for 4 classes but synthetic has 3"),
        ("dataset", "unknown dataset 'imagenet'"),
        ("bare", "does not record its architecture"),
        ("wrong-width", "has shape (8, 8), the model expects (32, 8)"),
        ("bad-model", "unknown model 'resnet9000'"),
        ("bad-set", "eval only takes data.* keys"),
    ],
)
def test_eval_errors_exit_2_with_one_line(checkpoints, tmp_path, case, needle):
    d, _ = checkpoints
    teacher, student, data, extra = d / "a.safetensors", d / "b.safetensors", list(DATA), []
    if case == "missing":
        student = tmp_path / "nope.safetensors"
    elif case == "pickle":
        student = tmp_path / "model.pt"
        torch.save({"w": torch.zeros(2)}, student)
    elif case == "classes":
        data = [x.replace("data.num_classes=4", "data.num_classes=3") for x in DATA]
    elif case == "dataset":
        data = ["--data", "imagenet"]
    elif case == "bare":
        student = d / "bare.safetensors"
    elif case == "wrong-width":
        extra = ["--student-model", "mlp:width=32"]
    elif case == "bad-model":
        extra = ["--teacher-model", "resnet9000"]
    elif case == "bad-set":
        extra = ["--set", "train.epochs=3"]
    args = ["eval", "--teacher", str(teacher), "--student", str(student), *data, *extra]
    r = CliRunner().invoke(app, args)  # in-process: the same command, without a Python start-up per case
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    if case == "pickle":  # and once as a user runs it: exit code 2, one line, no traceback
        p = gendistill(*args)
        assert p.returncode == 2 and p.stderr == r.stderr and "Traceback" not in p.stderr


def test_model_options_and_arch_strings():
    assert parse_model_option("cnn1d") == {"name": "cnn1d"}
    assert parse_model_option("cnn1d:width=16,batchnorm=false") == {"name": "cnn1d", "width": 16, "batchnorm": False}
    assert parse_arch_string("cnn1d(width=32)") == {"name": "cnn1d", "width": 32}
    assert parse_arch_string("mlp(width=64,depth=3,dropout=0.1)") == {"name": "mlp", "width": 64, "depth": 3,
                                                                      "dropout": 0.1}
    assert parse_arch_string("x(sizes=[1, 2],k=3)") == {"name": "x", "sizes": [1, 2], "k": 3}
    assert parse_arch_string("mlp") == {"name": "mlp"}
    assert parse_arch_string("not an arch!") is None


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_bundled_experiments_validate(path):
    cfg = load_config(path)
    assert cfg.name and cfg.seeds


def test_experiments_are_bundled():
    names = {p.stem for p in EXPERIMENTS}
    assert {"ban-mnist1d-5seeds", "fidelity-self-distillation", "ensemble-teacher"} <= names
    assert any(n.startswith("ablation") for n in names)

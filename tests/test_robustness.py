"""Never lose a run, never a traceback: the run-directory lock, file-system errors through the CLI, honest
statistics, the API's run directory, resuming with changed settings, and the API defects of issue 15."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from gendistill import rundir
from gendistill.analysis.stats import aggregate_summaries, bounds_for, paired_comparison, summarize
from gendistill.config import TrainConfig, load_config
from gendistill.errors import ConfigError, describe_os_error
from gendistill.lineage import Lineage
from gendistill.models import build_model


def gendistill(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gendistill", *args], capture_output=True, text=True, timeout=300,
                          **kw)


def one_error_line(r):
    """Exit code 2, no traceback, and the last line of stderr is the one `error:` line."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ 1. the lock
HOLD = """
import sys, time
from gendistill import rundir
with rundir.locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_holders_lock_is_taken_over(tiny_config_yaml, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = gendistill("run", str(tiny_config_yaml), "--out", str(out), "--progress", "off")
        line = one_error_line(r)
        assert f"pid {holder.pid}" in line and "in use by another gendistill run" in line and "--out" in line
        assert not (out / "config.yaml").exists()  # nothing written by the refused run
        with pytest.raises(rundir.RunDirLocked):  # in-process too
            with rundir.locked(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died with kill -9: its lock file is left behind, and the lock is free
    assert (out / rundir.LOCK).exists()
    r = gendistill("run", str(tiny_config_yaml), "--out", str(out), "--progress", "off", "--set", "generations.count=0")
    assert r.returncode == 0, r.stderr
    assert rundir.has_summary(out)


def test_the_lock_is_reentrant_and_ignored_by_the_emptiness_checks(tmp_path):
    root = tmp_path / "r"
    with rundir.locked(root):
        with rundir.locked(root):  # the runner and the lineage lock the same folder in one process
            assert rundir.entries(root) == []
    assert rundir.entries(root) == [] and (root / rundir.LOCK).exists()


def test_two_concurrent_cli_runs_into_one_folder_one_is_refused(tiny_config_yaml, tmp_path):
    out = tmp_path / "c"
    args = [sys.executable, "-m", "gendistill", "run", str(tiny_config_yaml), "--out", str(out), "--progress", "off"]
    a = subprocess.Popen(args + ["--set", "train.epochs=6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(args + ["--set", "train.epochs=6", "--set", "train.lr=0.001"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    ra, rb = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (ra, rb)
    loser = ra if a.returncode == 2 else rb
    assert "in use by another gendistill run" in loser[1] or "already holds a run" in loser[1]
    winner_lr = 0.01 if a.returncode == 0 else 0.001
    saved = load_config(out / "config.yaml")
    assert saved.train.lr == winner_lr  # the folder holds the winner's config and its numbers only


# ------------------------------------------------------------------------------------------ 2. file-system errors
def test_file_system_errors_on_user_paths_are_one_line_exit_2(tiny_config_yaml, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert "is a folder" in one_error_line(gendistill("run", str(folder)))
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    line = one_error_line(gendistill("run", str(latin)))
    assert str(latin) in line and "UTF-8" in line
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    line = one_error_line(gendistill("run", str(tiny_config_yaml), "--out", str(a_file)))
    assert "existing file" in line and a_file.read_text() == "x"
    line = one_error_line(gendistill("eval", "--teacher", str(a_file), "--student", str(a_file), "--data", "digits",
                                     "--json", str(folder)))
    assert "--json" in line and "is a folder" in line
    line = one_error_line(gendistill("run", str(tiny_config_yaml), "--out", str(tmp_path / "new"), "--resume"))
    assert "holds no run to resume" in line and not (tmp_path / "new").exists()


@pytest.mark.parametrize("code, needle", [
    (errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"), (errno.EROFS, "read-only"),
    (errno.EISDIR, "is a folder"), (errno.ENOTDIR, "not a folder"),
])
def test_os_errors_are_described_with_the_path_and_a_fix(code, needle):
    text = describe_os_error(OSError(code, os.strerror(code), "/some/where"))
    assert needle in text and "/some/where" in text


def test_a_full_disk_during_the_report_still_prints_the_results_table(tiny_config_yaml, tmp_path, monkeypatch):
    from gendistill import cli
    from gendistill.analysis import report

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "report.md"))

    monkeypatch.setattr(report, "write_report", no_space)
    r = CliRunner().invoke(cli.app, ["run", str(tiny_config_yaml), "--out", str(tmp_path / "r"), "--progress", "off",
                                     "--set", "generations.count=1"])
    assert r.exit_code == 2
    assert "gen1" in r.output and "agree(teacher)" in r.output  # the table came first
    assert "error: no space left on the device while writing" in r.output and "--resume" in r.output
    assert rundir.has_summary(tmp_path / "r")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_an_unwritable_output_folder_is_one_line(tiny_config_yaml, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "permission denied" in one_error_line(gendistill("run", str(tiny_config_yaml), "--out", str(locked / "x")))
    finally:
        locked.chmod(0o700)


def test_an_unwritable_dataset_cache_only_costs_a_note(tmp_path, monkeypatch, capsys):
    from gendistill.data import load_dataset, mnist1d

    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("GENDISTILL_CACHE", str(blocker / "sub"))  # mkdir under a file fails for root too
    data = load_dataset("mnist1d", num_samples=40, seed=123)
    assert len(data.train) == 32
    assert "cannot cache MNIST-1D" in capsys.readouterr().err
    assert mnist1d.cache_dir() == blocker / "sub"


# ------------------------------------------------------------------------------------------ 3-4. statistics
def test_duplicate_seeds_are_refused(tiny_config_yaml):
    with pytest.raises(ConfigError, match=r"seeds must be distinct \(repeated: \[0\]\)"):
        load_config(tiny_config_yaml, ["seeds=[0,0]"])


def test_no_spread_from_one_value_and_no_p_value_from_equal_differences():
    one = summarize([0.9])
    assert one["std"] is None and one["ci95"] is None
    same = paired_comparison([0.9, 0.8], [0.89, 0.79])  # differences 0.01 and 0.01: no spread, no test
    assert same["p_value"] is None
    real = paired_comparison([0.9, 0.8, 0.85], [0.89, 0.78, 0.85])
    assert 0 < real["p_value"] < 1


def test_intervals_of_bounded_quantities_stay_inside_their_bounds():
    assert bounds_for("test_acc") == (0.0, 1.0) and bounds_for("agreement_teacher") == (0.0, 1.0)
    assert bounds_for("kl_teacher")[0] == 0.0 and bounds_for("test_nll")[0] == 0.0 and bounds_for("gen") is None
    seeds = [{"seed": s, "generations": [{"gen": 0, "test_acc": a, "kl_teacher": k, "test_ece": e}], "ensembles": []}
             for s, (a, k, e) in enumerate([(1.0, 0.001, 0.001), (0.98, 0.05, 0.04)])]
    agg = aggregate_summaries(seeds)["generations"][0]
    unbounded = summarize([1.0, 0.98])["ci95"]
    assert unbounded[1] > 1.0  # the plain t interval of two seeds crosses 100 %
    assert agg["test_acc"]["ci95"][1] == 1.0 and agg["test_acc"]["ci95"][0] == pytest.approx(unbounded[0])
    assert agg["kl_teacher"]["ci95"][0] == 0.0 and agg["test_ece"]["ci95"][0] == 0.0


# ------------------------------------------------------------------------------------------ 5. plots, HTML
def test_timings_get_their_own_panel():
    from gendistill.analysis.plots import history_panels

    panels = history_panels(["epoch", "lr", "train_loss", "train_kd", "train_acc", "train_seconds", "test_acc",
                             "holdout_kl", "eval_seconds"])
    assert panels["time (s)"] == ["train_seconds", "eval_seconds"]
    assert panels["loss"] == ["train_loss", "train_kd"]


def test_report_tables_scroll_inside_the_page(tmp_path):
    from gendistill.analysis.document import Table
    from gendistill.analysis.render import CSS, render_html

    wide = Table(["model"] + [f"column {i}" for i in range(40)], [["gen0"] + ["0.1234 ± 0.0001"] * 40])
    page = render_html([wide])
    assert '<div class="tw"><table>' in page and ".tw{overflow-x:auto" in CSS.replace(" ", "")


# ------------------------------------------------------------------------------------------ 7-8. records, API
def test_the_api_writes_the_same_run_directory_as_the_cli(tiny_config_yaml, tmp_path):
    from gendistill.data import load_dataset
    from gendistill.runner import lineage_from_config, run_config

    cfg = load_config(tiny_config_yaml, ["generations.count=1"])
    _, cli_summary, _ = run_config(cfg, out=tmp_path / "cli", progress="off")
    data = load_dataset(cfg.data.name, **cfg.data.options)
    lineage_from_config(cfg, 0, "off").fit(data, out=tmp_path / "api")
    api_summary = rundir.read_summary(tmp_path / "api")

    def numbers(s):
        return [{k: v for k, v in g.items() if "seconds" not in k} for g in s["generations"] + s["ensembles"]]

    assert numbers(api_summary) == numbers(rundir.read_summary(tmp_path / "cli"))
    assert set(p.name for p in (tmp_path / "api").iterdir()) >= {"summary.json", "environment.json", "gen0", "gen1"}
    env = api_summary["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] >= 1 and env["cpu"]
    assert json.loads((tmp_path / "api" / "environment.json").read_text())["started"]["torch"] == torch.__version__
    r = gendistill("report", str(tmp_path / "api"))
    assert r.returncode == 0, r.stderr


def test_a_resume_under_another_thread_count_is_warned_about(tiny_config_yaml, tmp_path, capsys):
    from gendistill.runner import run_config

    out = tmp_path / "r"
    cfg = load_config(tiny_config_yaml, ["generations.count=0", "train.threads=1"])
    run_config(cfg, out=out, progress="lines")
    saved = json.loads((out / "environment.json").read_text())
    saved["started"]["threads"] = 7
    (out / "environment.json").write_text(json.dumps(saved))
    capsys.readouterr()
    run_config(cfg, out=out, resume=True, progress="lines")
    assert "threads: 7 -> 1" in capsys.readouterr().err
    assert len(json.loads((out / "environment.json").read_text())["resumes"]) == 1


# ------------------------------------------------------------------------------------------ 9. changed settings
def test_resume_with_allowed_changes_keeps_finished_generations(tiny_config_yaml, tmp_path):
    from gendistill.runner import run_config

    out = tmp_path / "r"
    cfg = load_config(tiny_config_yaml, ["generations.count=1"])
    run_config(cfg, out=out, progress="off")
    gen0 = (out / "gen0/model.safetensors").read_bytes()
    (out / "gen1/metrics.json").unlink()  # generation 1 unfinished (as after a NaN)
    changed = load_config(tiny_config_yaml, ["generations.count=1", "train.lr=0.005"])
    with pytest.raises(ConfigError, match=r"changed: train.lr.*--allow-change train.lr"):
        run_config(changed, out=out, resume=True, progress="off")
    _, summary, _ = run_config(changed, out=out, resume=True, progress="off", allow_change=["train.lr"])
    assert (out / "gen0/model.safetensors").read_bytes() == gen0
    assert len(summary["generations"]) == 2 and load_config(out / "config.yaml").train.lr == 0.005
    with pytest.raises(ConfigError, match="only applies with --resume"):
        run_config(changed, out=tmp_path / "other", allow_change=["train.lr"])


def test_a_nan_names_the_part_and_how_to_continue(tiny_config_yaml, tmp_path):
    r = gendistill("run", str(tiny_config_yaml), "--out", str(tmp_path / "nan"), "--progress", "off",
                   "--set", "generations.count=1", "--set", "train.lr=1e30", "--set", "train.optimizer=sgd")
    line = one_error_line(r)
    assert "loss part" in line and "--allow-change" in line
    assert "gen0:" in line and "No generation had finished" in line  # gen0 diverged: nothing to keep


# ------------------------------------------------------------------------------------------ 10. API defects
class Scaled(nn.Module):
    """Parameters held directly by the module, not by a child layer."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4) * 0.1)
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return (x @ self.w) * self.scale


def test_a_frozen_module_trains_as_a_student_and_direct_parameters_are_redrawn(tiny_data):
    frozen = Scaled()
    for p in frozen.parameters():
        p.requires_grad_(False)
    result = Lineage(student=frozen, generations=1, train=TrainConfig(epochs=2, batch_size=64, fidelity_samples=0),
                     progress="off", ensembles=False).fit(tiny_data)
    assert len(result.models) == 2 and result.generations[1]["test_acc"] > 0.4
    torch.manual_seed(1)
    a = build_model(frozen, 4, (8,))
    torch.manual_seed(2)
    b = build_model(frozen, 4, (8,))
    assert all(p.requires_grad for p in a.parameters())
    assert not torch.equal(a.w, frozen.w) and not torch.equal(a.w, b.w)  # matrices redrawn per generation
    assert torch.equal(a.scale, torch.ones(4))  # vectors keep their chosen initial value


# ------------------------------------------------------------------------------------------ 11. smaller
def test_switching_datasets_with_set_suggests_replacing_the_block():
    with pytest.raises(ConfigError, match=r"replace the whole block, e.g. --set 'data=\{name: digits\}'"):
        load_config(None, ["data.name=digits"])


def test_an_empty_config_file_says_it_runs_with_defaults(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    assert load_config(empty).generations.count == load_config(None).generations.count
    assert "is empty; running with every default" in capsys.readouterr().err


def test_ctrl_c_exits_130_with_a_resume_hint(tiny_config_yaml, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "gendistill", "run", str(tiny_config_yaml), "--out", str(tmp_path / "i"),
                          "--progress", "lines", "--set", "train.epochs=400"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "i" / "gen0" / "checkpoint.pt").exists():
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err and "interrupted" in err


# ------------------------------------------------------------------------------------------ 13. TensorBoard
def test_tensorboard_event_files_hold_every_history_column(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(epochs=2, batch_size=64, fidelity_samples=32, tensorboard=True)
    Lineage(student={"name": "mlp", "width": 16}, generations=1, train=cfg, progress="off",
            ensembles=False).fit(tiny_data, out=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb/gen1/tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/kd", "train/acc", "test/acc", "holdout/agreement"} <= tags
    history = rundir.read_history(tmp_path / "tb/gen1")
    assert [e.value for e in events.Scalars("test/acc")] == pytest.approx([r["test_acc"] for r in history])


def test_tensorboard_without_the_package_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        load_config(None, ["train.tensorboard=true"])


# ------------------------------------------------------------------------------------------ parallel seeds (#16)
def test_parallel_seeds_write_the_same_run_directory_and_numbers_as_sequential(tiny_config_yaml, tmp_path):
    from gendistill.runner import job_count, run_config

    def numbers(summary):
        return [{k: v for k, v in g.items() if "seconds" not in k} for g in summary["generations"] + summary["ensembles"]]

    cfg = load_config(tiny_config_yaml, ["generations.count=1", "seeds=[0,1]", "train.threads=1"])
    _, sequential, _ = run_config(cfg.model_copy(update={"jobs": 1}), out=tmp_path / "seq", progress="off")
    _, parallel, results = run_config(cfg.model_copy(update={"jobs": 2}), out=tmp_path / "par", progress="off")
    assert numbers(parallel) == numbers(sequential)
    for s in (0, 1):
        assert numbers(rundir.read_summary(tmp_path / f"par/seed{s}")) == numbers(rundir.read_summary(tmp_path / f"seq/seed{s}"))
        a = load_file(tmp_path / f"par/seed{s}/gen1/model.safetensors")
        b = load_file(tmp_path / f"seq/seed{s}/gen1/model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same weights, bit for bit
    assert sorted(p.name for p in (tmp_path / "par").iterdir()) == sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert [r.generations[1]["test_acc"] for r in results] == [g["test_acc"]["values"][i]
                                                               for i, g in enumerate([parallel["generations"][1]] * 2)]
    assert job_count(cfg.model_copy(update={"jobs": 8})) == 2 and job_count(load_config(tiny_config_yaml)) == 1


def test_a_wide_multi_seed_table_fits_1280px_in_headless_chromium(tmp_path):
    import importlib.util
    import shutil
    from pathlib import Path

    from gendistill.analysis.document import Heading, Table
    from gendistill.analysis.render import render_html

    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no headless Chromium on PATH")
    spec = importlib.util.spec_from_file_location("crw", Path(__file__).parent.parent / "scripts/check_report_width.py")
    crw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crw)
    headers = ["model", "teacher", "test acc (%)", "NLL", "ECE (%)", "agree w/ teacher (%)", "KL(t‖s)", "agree w/ gen0 (%)"]
    row = ["gen3 (cnn1d(width=32))", "gen2"] + ["93.40 ± 0.36 [92.50, 94.30]", "0.1902 ± 0.0051 [0.1776, 0.2029]"] * 3
    page = tmp_path / "report.html"
    page.write_text(render_html([Heading("w", 1), Table(headers, [row] * 8)]))
    doc, window, tables, past = crw.measure(page, 1280)
    assert tables == 1 and past == 0 and doc <= window

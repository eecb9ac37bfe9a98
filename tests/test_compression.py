"""Compression figures: MACs by torch's FLOP counter, checkpoint size, speed, and the report's table."""

from __future__ import annotations

import torch
from torch import nn

from gendistill.analysis.compression import compression_rows
from gendistill.compression import count_macs, model_figures
from gendistill.models import create_model


def test_macs_of_hand_made_layers():
    assert count_macs(nn.Linear(10, 5), (10,)) == 50
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU())
    assert count_macs(conv, (3, 8, 8)) == 4 * 8 * 8 * 3 * 9


def test_resnet20_macs_match_the_published_figure():
    # resnet20 on 32x32: about 41M multiply-accumulates (He et al. 2016's CIFAR ResNets; 40.8M with the fc layer)
    macs = count_macs(create_model("resnet20", 100, (3, 32, 32)), (3, 32, 32))
    assert 40.5e6 < macs < 41.5e6


def test_model_figures_with_checkpoint_and_speed(tmp_path):
    from gendistill.engine.checkpoint import save_model

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    save_model(model, tmp_path / "m.safetensors", {})
    fig = model_figures(model, (3, 4), checkpoint=tmp_path / "m.safetensors", speed=True, throughput_batch=8)
    assert fig["params"] == 39 and fig["macs"] == 36
    assert fig["checkpoint_bytes"] == (tmp_path / "m.safetensors").stat().st_size
    assert fig["latency_ms"] > 0 and fig["throughput"] > 0 and fig["speed_device"] == "cpu"
    assert count_macs(nn.Embedding(5, 2), (3,)) is None  # float zeros are not token ids: None, not an error


def test_compression_table_ratios_to_gen0():
    summary = {"generations": [
        {"gen": 0, "arch": "resnet32x4", "params": 7_433_860, "macs": 1_000_000, "throughput": 100.0},
        {"gen": 1, "arch": "resnet8x4", "params": 1_233_540, "macs": 250_000, "throughput": 400.0,
         "checkpoint_bytes": int(4.7 * 2**20), "latency_ms": 1.25},
    ]}
    rows = compression_rows(summary)
    assert rows[1][:4] == ["gen1", "resnet8x4", "1.234M", "0.25M"]
    assert rows[1][4:] == ["4.70", "1.25", "400", "0.17x", "0.25x", "4.00x"]
    assert compression_rows({"generations": [{"gen": 0}]}) == []


def test_lineage_records_compression_figures(tmp_path):
    import gendistill as gd
    from gendistill.data import DatasetBundle, Split

    torch.manual_seed(0)
    data = DatasetBundle("tiny", Split(torch.randn(32, 6), torch.randint(0, 3, (32,))),
                         Split(torch.randn(16, 6), torch.randint(0, 3, (16,))), 3, (6,))
    res = gd.Lineage(student="mlp", generations=1, train={"epochs": 1, "device": "cpu", "speed_figures": True},
                     progress="off").fit(data, out=tmp_path / "run")
    for g in res.generations:
        assert g["macs"] > 0 and g["checkpoint_bytes"] > 0 and g["throughput"] > 0
    from gendistill import rundir
    from gendistill.analysis.report import write_report

    rundir.write_summary(tmp_path / "run", res.to_dict())
    write_report(tmp_path / "run")
    text = (tmp_path / "run" / "report.md").read_text()
    assert "## Compression" in text and "| gen1 | mlp |" in text

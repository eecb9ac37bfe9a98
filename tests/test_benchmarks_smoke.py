"""The per-term cost benchmark runs end to end at tiny settings and ends with its JSON line (keys, not timings)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_term_costs_quick_prints_its_json_line():
    out = subprocess.run([sys.executable, "term_costs.py", "--quick", "--terms", "rkd_distance"], cwd=BENCH,
                         capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "term_costs" and result["batch_size"] == 128
    assert set(result["results"]) == {"ce", "ce+kd", "rkd_distance"}
    row = result["results"]["rkd_distance"]
    assert {"ms_per_step", "vs_ce", "vs_ce_kd", "vs_ce_kd_ci95", "objective"} <= set(row)
    assert row["ms_per_step"] > 0 and result["results"]["ce+kd"]["vs_ce_kd"] == 1.0


def test_scheme_costs_quick_prints_its_json_line():
    out = subprocess.run([sys.executable, "term_costs.py", "--quick", "--schemes", "dml"], cwd=BENCH,
                         capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "scheme_costs" and set(result["results"]) == {"ce", "ce+kd", "dml"}
    assert result["results"]["dml"]["what"].startswith("gen 0") and result["results"]["dml"]["ms_per_step"] > 0


def test_every_benchmark_script_imports():
    """A renamed helper in one script must not silently break another that imports it (profile_step.py once
    imported a function vs_handwritten.py no longer had)."""
    names = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))
    code = f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(BENCH)})
    assert out.returncode == 0, out.stderr[-2000:]

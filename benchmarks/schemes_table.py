"""Reproduce the "Measured" table of docs/schemes.md (and its copy in docs/methods.md).

    python benchmarks/schemes_table.py                       # every scheme and its baseline x 3 seeds, then the table
    python benchmarks/schemes_table.py --table-only          # rebuild the table from runs/schemes/*/summary.json
    python benchmarks/schemes_table.py --schemes dml takd    # a subset (and the baselines those rows need)

1. Runs ``examples/schemes/<s>.yaml`` for every scheme with seeds 0, 1, 2 into ``<out>/<s>`` (the example as it
   is; only ``seeds`` is set).
2. Runs the baseline each row needs into ``<out>/base-<b>``, with the example's data, model, epochs, batch
   size and learning rate, seeds 0, 1, 2 (see ``BASELINES``):

   * ``base-labels``: cnn1d width 16 from labels only (the dml / one / byot / pskd / tf_kd examples without
     their scheme or term; the five examples share data, model and training settings, so one run serves
     all five rows; the script checks that from the runs' ``config.yaml``);
   * ``base-kd-akd``, ``base-kd-rco``: plain KD (the example's objective, scheme ``offline``) from the same
     generation 0 (retrained with the same seed, so the same teacher) to the same student;
   * ``base-takd-direct``: the width-4 student distilled directly from the width-64 teacher (generation 1
     of a 1-generation lineage); ``base-takd-direct-same-init``: the same, as generation 2 of the chain with
     ``generations.teacher: original``, so the student has the chain's student's initialisation (an extra row);
   * ``base-multi_teacher-one``: the same pool, the student distils from teacher 0 alone (the row's
     baseline); ``base-multi_teacher-labels``: ``pool: 4``, so generation 3, the width-8 student with the same
     initialisation, learns from labels only (an extra row);
   * ``base-dfad-random``: DFAD with ``adversarial: false`` (an untrained, random generator); the same for
     ``dfad_deepinversion_like`` (``base-dfad-deepinversion_like-random``).

   ``ke``, ``noisy_student`` and ``mpl`` need no extra run: their last generation is compared with
   generation 0 of the same run. A run directory that already holds a ``summary.json`` is reused; one
   without is continued with ``--resume``.
3. Writes ``<out>/table.md`` from each run's top-level ``summary.json`` (per-seed ``test_acc`` values of the
   evaluated generation, final epoch: mean +- sample std over seeds; the paired difference per seed with a
   two-sided paired t-test when scipy is installed) and ``<out>/timing/<run>.json`` (wall clock of each
   ``gendistill run`` command).

Runs one job at a time, each with one torch thread by default (``--threads``). Progress and each command's output go to ``<out>/logs/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import ROOT, last_error, run_step

EXAMPLES = ROOT / "examples" / "schemes"

# In the order of docs/schemes.md.
SCHEMES = ["dml", "one", "byot", "pskd", "tf_kd", "multi_teacher", "takd", "rco", "ke", "akd", "dfad",
           "dfad_deepinversion_like", "noisy_student", "mpl", "meta_distil"]

# baseline run -> (example it is derived from, --set overrides)
BASELINES: dict[str, tuple[str, list[str]]] = {
    "base-labels": ("pskd", ["name=labels-mnist1d", "scheme={name: offline}"]),
    "base-kd-akd": ("akd", ["name=kd-akd-mnist1d", "scheme={name: offline}"]),
    "base-kd-rco": ("rco", ["name=kd-rco-mnist1d", "scheme={name: offline}"]),
    "base-takd-direct": ("takd", ["name=takd-direct-mnist1d", "scheme={name: offline}", "generations.count=1",
                                  "generations.archs={1: {name: cnn1d, width: 4}}"]),
    # the same chain, but generation 2 (the width-4 student, same init and data order) learns from generation 0
    "base-takd-direct-same-init": ("takd", ["name=takd-direct-same-init-mnist1d", "generations.teacher=original"]),
    "base-multi_teacher-one": ("multi_teacher", ["name=multi_teacher-one-mnist1d", "scheme.teachers=[0]"]),
    # a pool of 4: generation 3 (the width-8 student, same init and data order) is trained from labels too
    "base-multi_teacher-labels": ("multi_teacher", ["name=multi_teacher-labels-mnist1d", "scheme.pool=4"]),
    "base-dfad-random": ("dfad", ["name=dfad-random-mnist1d", "scheme.adversarial=false"]),
    "base-kd-meta_distil": ("meta_distil", ["name=kd-meta_distil-mnist1d", "scheme={name: offline}",
                                            "objective=[{term: ce, weight: 0.5}, {term: kd, weight: 0.5, temperature: 2.0}]"]),
    "base-dfad-deepinversion_like-random": ("dfad_deepinversion_like",
                                            ["name=dfad-deepinversion_like-random-mnist1d", "scheme.adversarial=false"]),
}

MNIST1D = "MNIST-1D (4000 / 1000)"
DIGITS = "digits (1347 / 450; 136 labeled)"


@dataclass(frozen=True)
class Row:
    label: str
    run: str                  # scheme run (a directory under <out>)
    base: str                 # baseline run; == run for a within-run comparison
    base_gen: int | None      # baseline generation (None: the last one)
    data: str
    compared: str             # what the baseline is ("{teacher}" is filled with the teacher's accuracy)
    agree: str | None         # None | "teacher" (agreement_teacher) | "gen0" (agreement_gen0)
    teachers: tuple[int, ...] = ()  # generations whose accuracy is quoted as the teacher's


ROWS = [
    Row("dml", "dml", "base-labels", None, MNIST1D, "peer 0 of 2 vs the same net from labels", None),
    Row("one", "one", "base-labels", None, MNIST1D, "trunk + branch 0 vs the same net from labels", None),
    Row("byot", "byot", "base-labels", None, MNIST1D, "final head vs the same net from labels", None),
    Row("pskd", "pskd", "base-labels", None, MNIST1D, "PS-KD targets vs the same net from labels", None),
    Row("tf_kd (term)", "tf_kd", "base-labels", None, MNIST1D, "ce + tf_kd vs ce, same net", None),
    Row("multi_teacher", "multi_teacher", "base-multi_teacher-one", None, MNIST1D,
        "KD from the mean of 3 teachers (w32, w32, w16: {teacher}) vs KD from teacher 0 alone", "teacher", (0, 1, 2)),
    Row("multi_teacher (vs labels)", "multi_teacher", "base-multi_teacher-labels", None, MNIST1D,
        "the same student vs it from labels (same init)", "teacher", (0, 1, 2)),
    Row("takd", "takd", "base-takd-direct", None, MNIST1D,
        "w64 ({teacher}) → w16 → w4 vs w64 → w4 (a 1-generation run)", "gen0", (0,)),
    Row("takd (same-init baseline)", "takd", "base-takd-direct-same-init", None, MNIST1D,
        "the same vs w64 → w4 as gen 2 (same student init)", "gen0", (0,)),
    Row("rco", "rco", "base-kd-rco", None, MNIST1D,
        "anchors at epochs 5/10/15/20 of the w64 teacher ({teacher}) vs plain KD from it", "teacher", (0,)),
    Row("ke", "ke", "ke", 0, MNIST1D, "gen 3 vs gen 0 of the run (4x vs 1x the epochs)", None),
    Row("akd", "akd", "base-kd-akd", None, MNIST1D,
        "KD + discriminator vs plain KD, teacher w32 ({teacher})", "teacher", (0,)),
    Row("dfad", "dfad", "base-dfad-random", None, MNIST1D,
        "trained vs untrained (random) generator; teacher w32 {teacher}, chance 10 %", "teacher", (0,)),
    Row("dfad (deepinversion_like)", "dfad_deepinversion_like", "base-dfad-deepinversion_like-random", None, MNIST1D,
        "KL + BN prior, simultaneous step, vs its untrained generator; teacher w32 {teacher}", "teacher", (0,)),
    Row("noisy_student", "noisy_student", "noisy_student", 0, DIGITS, "gen 2 vs gen 0 (136 labels only)", "teacher"),
    Row("mpl", "mpl", "mpl", 0, DIGITS, "gen 1 vs gen 0 (136 labels only)", "teacher"),
    Row("meta_distil", "meta_distil", "base-kd-meta_distil", None, MNIST1D,
        "KD from a meta-learned teacher (w32 {teacher}) vs KD from the frozen teacher", "teacher", (0,)),
]

# The rows that share a baseline run must agree with it on everything but the scheme / objective.
SHARED_KEYS = ("data", "model", "train", "seeds")


def scheme_command(py: str, out: Path, scheme: str, seeds: list[int]) -> list[str]:
    return [py, "-m", "gendistill", "run", str(EXAMPLES / f"{scheme}.yaml"), "--out", str(out / scheme),
            "--progress", "off", "--set", f"seeds=[{','.join(map(str, seeds))}]"]


def baseline_command(py: str, out: Path, base: str, seeds: list[int]) -> list[str]:
    example, overrides = BASELINES[base]
    cmd = [py, "-m", "gendistill", "run", str(EXAMPLES / f"{example}.yaml"), "--out", str(out / base),
           "--progress", "off", "--set", f"seeds=[{','.join(map(str, seeds))}]"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd



# ---------------------------------------------------------------------------------------------- the table


def _values(v) -> list[float]:
    if isinstance(v, dict):
        return [float(x) for x in v["values"]]
    return [float(v)]


def _mean_std(vals: list[float]) -> tuple[float, float]:
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((x - m) ** 2 for x in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, s


def _pm(vals: list[float] | None, scale: float = 100.0) -> str:
    if not vals:
        return "—"
    m, s = _mean_std([v * scale for v in vals])
    return f"{m:.2f} ± {s:.2f}"


def _gen(summary: dict, k: int | None) -> dict:
    gens = sorted(summary["generations"], key=lambda g: g["gen"])
    return gens[-1] if k is None else next(g for g in gens if g["gen"] == k)


def _p_value(a: list[float], b: list[float]) -> float | None:
    try:
        from scipy import stats
    except ImportError:
        return None
    if len(a) < 2 or all(x == y for x, y in zip(a, b)):
        return None
    p = float(stats.ttest_rel(a, b).pvalue)
    return None if math.isnan(p) else p


def _wall(out: Path, run: str, n_seeds: int) -> float | None:
    t = out / "timing" / f"{run}.json"
    if not t.exists():
        return None
    t = json.loads(t.read_text())
    return None if t.get("resumed") else t["wall_s"] / n_seeds


def _config(out: Path, run: str) -> dict:
    import yaml

    return yaml.safe_load((out / run / "config.yaml").read_text())


def build_table(out: Path, rows: list[Row]) -> tuple[str, list[dict]]:
    """The Markdown table and, per row, the figures behind it (for the notes and the report)."""
    lines = ["| scheme | data (train / test) | evaluated model (arch) | what is compared (baseline) "
             "| test acc % (mean ± std over seeds) | baseline test acc % | Δ paired, pp (p) | agree(teacher) % (scheme / baseline) "
             "| wall s / seed (scheme / baseline) |",
             "|---|---|---|---|---|---|---|---|---|"]
    facts: list[dict] = []
    for r in rows:
        missing = [d for d in dict.fromkeys((r.run, r.base)) if not (out / d / "summary.json").exists()]
        if missing:
            why = "; ".join(f"{d}: {last_error(out / 'logs' / f'{d}.log')}" for d in missing)
            lines.append(f"| {r.label} | {r.data} | | {r.compared.format(teacher='?')} | n/a: {why} | | | | |")
            facts.append({"row": r.label, "missing": missing})
            continue
        s = json.loads((out / r.run / "summary.json").read_text())
        b = s if r.base == r.run else json.loads((out / r.base / "summary.json").read_text())
        g, gb = _gen(s, None), _gen(b, r.base_gen)
        acc, base = _values(g["test_acc"]), _values(gb["test_acc"])
        fact: dict = {"row": r.label, "acc": acc, "base": base, "arch": g["arch"]}
        delta = "—"
        if len(acc) == len(base):
            d = [(x - y) * 100 for x, y in zip(acc, base)]
            dm, ds = _mean_std(d)
            p = _p_value(acc, base)
            fact.update(delta=d, p=p)
            delta = f"{dm:+.2f} ± {ds:.2f}" + (f" (p={p:.3f})" if p is not None else "")
        teacher = "; ".join(f"{_pm(_values(_gen(s, k)['test_acc']))}" for k in r.teachers) + (" %" if r.teachers else "")
        # a baseline that retrains the teacher must have retrained the same one
        checks = []
        if r.base != r.run and r.teachers:
            shared = [k for k in r.teachers if any(x["gen"] == k and x["arch"] == _gen(s, k)["arch"]
                                                   for x in b["generations"] if x is not gb)]
            if shared:
                same = all(_values(_gen(s, k)["test_acc"]) == _values(_gen(b, k)["test_acc"]) for k in shared)
                checks.append("same teacher(s) as the baseline's" if same else "TEACHERS DIFFER from the baseline's")
        if r.base != r.run:
            cs, cb = _config(out, r.run), _config(out, r.base)
            differ = [k for k in ("data", "train", "seeds") if cs.get(k) != cb.get(k)]
            if r.base == "base-labels" and cs.get("model") != cb.get("model"):
                differ.append("model")
            checks.append("settings differ: " + ", ".join(differ) if differ else "same data/train/seeds")
        fact["checks"] = checks
        agree = "—"
        if r.agree is not None:
            key = "agreement_teacher" if r.agree == "teacher" else "agreement_gen0"
            a_s = g.get(key)
            a_b = gb.get("agreement_teacher" if r.agree == "teacher" else "agreement_gen0")
            if r.agree == "gen0" and gb["gen"] == 0:
                a_b = None
            agree = f"{_pm(_values(a_s)) if a_s is not None else '—'} / {_pm(_values(a_b)) if a_b is not None else '—'}"
        n = s.get("n_seeds", 1)
        w_s = _wall(out, r.run, n)
        w_b = _wall(out, r.base, b.get("n_seeds", 1)) if r.base != r.run else None
        wall = f"{w_s:.0f}" if w_s is not None else "—"
        if r.base != r.run:
            wall += f" / {w_b:.0f}" if w_b is not None else " / —"
        fact["wall"] = (w_s, w_b)
        lines.append(f"| {r.label} | {r.data} | {g['arch']}, gen {g['gen']} | {r.compared.format(teacher=teacher)} "
                     f"| {_pm(acc)} | {_pm(base)} | {delta} | {agree} | {wall} |")
        facts.append(fact)
    return "\n".join(lines) + "\n", facts


def _notes(facts: list[dict]) -> str:
    out = []
    for f in facts:
        if "missing" in f:
            out.append(f"- {f['row']}: missing runs {f['missing']}")
            continue
        per_seed = ", ".join(f"{x:+.2f}" for x in f.get("delta", []))
        p = f.get("p")
        out.append(f"- {f['row']}: per-seed Δ (pp) [{per_seed}]" + (f", paired t p = {p:.3g}" if p is not None else "")
                   + (f"; {'; '.join(f['checks'])}" if f["checks"] else ""))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/schemes", help="root of the run directories (default runs/schemes)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--schemes", nargs="+", default=SCHEMES, choices=SCHEMES)
    p.add_argument("--python", default=sys.executable, help="interpreter with gendistill installed")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of each run (default 1: on a small shared machine, two runs of two "
                        "threads each slow each other down many times; 0 leaves the environment as it is)")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from existing runs")
    a = p.parse_args(argv)
    env = dict(os.environ)
    if a.threads > 0:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    out = Path(a.out)
    out = out if out.is_absolute() else ROOT / out
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = [r for r in ROWS if r.run in a.schemes]
    if not a.table_only:
        t0 = time.time()
        for scheme in a.schemes:
            run_step(scheme, scheme_command(a.python, out, scheme, seeds), out / scheme, out, env)
            for base in dict.fromkeys(r.base for r in rows if r.run == scheme and r.base in BASELINES):
                run_step(base, baseline_command(a.python, out, base, seeds), out / base, out, env)
        print(f"all runs: {time.time() - t0:.0f} s", flush=True)
    table, facts = build_table(out, rows)
    (out / "table.md").write_text(table)
    (out / "notes.md").write_text(_notes(facts))
    print(table)
    print(_notes(facts))
    total = sum(json.loads(t.read_text())["wall_s"] for t in (out / "timing").glob("*.json")) if (out / "timing").exists() else 0
    print(f"(torch threads per run: {env.get('OMP_NUM_THREADS', 'default')}; sum of recorded run times {total:.0f} s; "
          f"table written to {out / 'table.md'}, per-seed notes to {out / 'notes.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

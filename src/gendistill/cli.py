"""The ``gendistill`` command line. User errors print one line and exit with code 2."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from . import rundir
from .errors import GendistillError, describe_os_error

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None,
                  help="Multi-generation knowledge distillation: born-again lineages and their measurement.")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _user_errors(interrupt_hint: str | None = None):
    """Bad input and file-system trouble on the user's paths end in one ``error:`` line and exit code 2;
    Ctrl-C in exit code 130 with a hint on how to continue."""
    try:
        yield
    except GendistillError as e:
        _fail(str(e))
    except OSError as e:
        _fail(describe_os_error(e))
    except UnicodeDecodeError as e:
        _fail(f"a file is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8")
    except KeyboardInterrupt:
        typer.echo("\ninterrupted" + (f"; {interrupt_hint}" if interrupt_hint else ""), err=True)
        raise typer.Exit(code=130) from None


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config; omit for the bundled default (BAN on MNIST-1D)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: --set generations.count=5")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default: <out>/<name> from the config)")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out / the config's run directory")] = False,
    progress: Annotated[str, typer.Option(help="auto | bar | lines | off")] = "auto",
    jobs: Annotated[int | None, typer.Option(help="seeds trained at once in worker processes (default: as many as "
                                             "seeds and CPU cores allow; 1 on a GPU)")] = None,
    allow_change: Annotated[list[str] | None, typer.Option(
        "--allow-change", help="with --resume: config keys that may differ from the saved run's, e.g. train.lr "
        "(finished generations are kept, unfinished ones restart)")] = None,
) -> None:
    """Run a lineage (one per seed) and print the per-generation table."""
    from .config import load_config
    from .runner import run_config

    args = [a for a in sys.argv[1:] if a != "--resume"] if sys.argv[1:2] == ["run"] else ["run"]
    hint = "every finished epoch is kept; continue with: gendistill " + shlex.join(args + ["--resume"])
    with _user_errors(hint):
        if progress not in ("auto", "bar", "lines", "off"):
            raise GendistillError(f"--progress must be auto, bar, lines or off, got {progress!r}")
        cfg = load_config(config, (set_ or []) + ([f"jobs={jobs}"] if jobs is not None else []))
        t0 = time.perf_counter()
        root, summary, _ = run_config(cfg, out=out, resume=resume, progress=progress, allow_change=allow_change or [])
    from .analysis.report import write_report
    from .analysis.tables import lineage_table
    from .engine import distributed

    if not distributed.is_main():
        distributed.shutdown()
        return
    typer.echo(lineage_table(summary))  # the results first: a failing report must not hide them
    with _user_errors():
        html, _ = write_report(root)
    typer.echo(f"run directory: {root}   ({time.perf_counter() - t0:.1f} s)   report: {html}")
    distributed.shutdown()


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory written by `gendistill run`")]) -> None:
    """Write report.html and report.md (with plots) for a run directory."""
    from .analysis.report import write_report

    if not rundir.has_summary(run_dir):
        _fail(f"{run_dir} holds no summary.json; point to a directory written by `gendistill run`")
    with _user_errors():
        html, md = write_report(run_dir)
    typer.echo(f"wrote {html}\nwrote {md}")


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="two or more run directories")],
    md: Annotated[Path | None, typer.Option("--md", help="also write the table to this Markdown file")] = None,
) -> None:
    """Side-by-side table of several runs."""
    from .analysis.report import compare_runs
    from .io import atomic_write_text

    for d in run_dirs:
        if not rundir.has_summary(d):
            _fail(f"{d} holds no summary.json; point to directories written by `gendistill run`")
    with _user_errors():
        table = compare_runs(run_dirs)
        typer.echo(table)
        if md is not None:
            atomic_write_text(md, table + "\n")


@app.command("eval")
def eval_(
    teacher: Annotated[Path, typer.Option(help="teacher safetensors file (e.g. runs/x/gen0/model.safetensors)")],
    student: Annotated[Path, typer.Option(help="student safetensors file")],
    data: Annotated[str, typer.Option(help="dataset name (gendistill list datasets), as the models were trained on")],
    teacher_model: Annotated[str | None, typer.Option(help="override the architecture: NAME or NAME:key=value,...")] = None,
    student_model: Annotated[str | None, typer.Option(help="override the architecture: NAME or NAME:key=value,...")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="dataset option: --set data.num_samples=5000")] = None,
    json_: Annotated[Path | None, typer.Option("--json", help="also write every figure to this JSON file")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps")] = "auto",
) -> None:
    """Fidelity (agreement, KL(t||s)) and accuracy, NLL, Brier, ECE of two saved models, test and train splits."""
    from .analysis.evaluate_cli import evaluate_pair, format_result
    from .io import write_json

    with _user_errors():
        if json_ is not None and json_.is_dir():
            raise GendistillError(f"--json {json_} is a folder; give a file path, e.g. {json_ / 'eval.json'}")
        result = evaluate_pair(teacher, student, data, teacher_model, student_model, set_ or [], device)
        typer.echo(format_result(result))
        if json_ is not None:
            write_json(json_, result)
            typer.echo(f"wrote {json_}")


@app.command("list")
def list_(what: Annotated[str, typer.Argument(help="methods | schemes | models | datasets")] = "methods") -> None:
    """List the registered methods (knowledge terms, objective presets and schemes), schemes, models or datasets."""
    from . import config as _config  # noqa: F401  (registers models and datasets)
    from . import knowledge as _knowledge  # noqa: F401
    from . import schemes as _schemes  # noqa: F401
    from .registry import DATASETS, METHODS, MODELS, SCHEMES

    tables = {"methods": METHODS, "schemes": SCHEMES, "models": MODELS, "datasets": DATASETS}
    if what not in tables:
        _fail(f"cannot list {what!r}; choose one of: {', '.join(tables)}")
    reg = tables[what]
    if what in ("methods", "schemes"):
        typer.echo(f"{'name':<16} {'kind':<10} paper")
        for e in reg.entries():
            typer.echo(f"{e.name:<16} {e.meta.get('kind', ''):<10} {e.meta.get('paper', '')}")
        if what == "schemes":
            return
        from .knowledge import PRESETS

        typer.echo("\nobjective presets:")
        for name, text in PRESETS.items():
            typer.echo(f"  {name:<14} {text}")
        typer.echo("\nschemes (scheme: {name: ...}; `gendistill list schemes` gives their papers):")
        for e in SCHEMES.entries():
            typer.echo(f"  {e.name:<14} {e.meta.get('kind', ''):<13} {e.summary}")
    elif what == "models":
        from .models import count_parameters

        typer.echo(f"{'name':<20} {'params':>8}  summary  (params: 100 classes, 3x32x32 inputs, for the image zoo)")
        for e in reg.entries():
            n = f"{count_parameters(e.name) / 1e6:.2f}M" if e.meta.get("zoo") else ""
            typer.echo(f"{e.name:<20} {n:>8}  {e.summary}")
    else:
        for e in reg.entries():
            typer.echo(f"{e.name:<16} {e.summary}")


def main() -> None:
    try:
        app()
    except GendistillError as e:  # pragma: no cover - commands catch their own
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)

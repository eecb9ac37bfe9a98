"""``gendistill eval``: fidelity between two saved models, and each model's own figures, on one dataset.

Every number comes from :mod:`gendistill.metrics` (the definitions used by the lineage, the report
and ``summary.json``), computed on the outputs of the saved (final-epoch) weights, on the test and the train
split:

- per model (``teacher`` and ``student``): ``test_acc``, ``test_nll``, ``test_brier``, ``test_ece`` and the
  same four with ``train_``;
- fidelity of the student to the teacher: ``agreement_teacher`` and ``kl_teacher`` (test split, temperature 1),
  ``agreement_teacher_train`` and ``kl_teacher_train`` (train split) -- the key names of ``summary.json``.

The architecture is read from the checkpoint's safetensors metadata (the ``model_spec`` that the lineage
writes; for older files, the ``arch`` display string such as ``cnn1d(width=32)``), unless overridden with
``--teacher-model`` / ``--student-model`` (``name`` or ``name:key=value,key=value``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from torch import Tensor, nn

from .. import metrics as M
from ..config import ModelConfig, apply_overrides, validate
from ..data import DatasetBundle, load_dataset
from ..engine.checkpoint import load_model, read_safetensors
from ..engine.evaluate import predict_logits, select_device
from ..errors import CheckpointError, ConfigError
from ..models import build_model, check_fits

SPLITS = ("test", "train")
MODEL_FIELDS = ("acc", "nll", "brier", "ece")


# ------------------------------------------------------------------------------------------ architecture


def _split_top_level(text: str) -> list[str]:
    """Split ``a=1,b=[2, 3],c={x: 1}`` on the commas that are not inside brackets or braces."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def _options(text: str, what: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for item in _split_top_level(text):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{what}: expected key=value, got {item.strip()!r}")
        try:
            opts[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            opts[key.strip()] = raw.strip()
    return opts


def parse_model_option(text: str, flag: str = "--model") -> dict[str, Any]:
    """``"cnn1d"`` or ``"cnn1d:width=16,batchnorm=false"`` -> ``{"name": "cnn1d", "width": 16, ...}``."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ConfigError(f"{flag} {text!r}: expected NAME or NAME:key=value,..., e.g. cnn1d:width=16")
    return {"name": name.strip(), **_options(rest, f"{flag} {text!r}")}


def parse_arch_string(arch: str) -> dict[str, Any] | None:
    """The lineage's display string ``name(k=v,...)`` -> a model spec, or None when it is not of that form
    (e.g. the class name of a model given from Python)."""
    m = re.fullmatch(r"\s*([A-Za-z_][\w.-]*)\s*(?:\((.*)\))?\s*", arch, flags=re.S)
    if not m:
        return None
    try:
        return {"name": m.group(1), **(_options(m.group(2), "arch") if m.group(2) else {})}
    except ConfigError:
        return None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The safetensors metadata of ``path`` with each value JSON-decoded (``save_model`` JSON-encodes them).
    Missing files, pickles and unreadable files raise :class:`CheckpointError`."""
    from safetensors import safe_open

    read_safetensors(path)  # the one place that checks existence, pickles and readability
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def _validated_spec(spec: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return ModelConfig.model_validate(spec).spec()
    except ValidationError as e:
        msg = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {msg}") from None


def model_spec_for(path: str | Path, override: str | None, role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model spec, metadata)`` of a checkpoint: the ``--<role>-model`` override when given, else the
    checkpoint's ``model_spec`` metadata, else its parsed ``arch`` string."""
    try:
        meta = read_metadata(path)
    except CheckpointError as e:  # name the role: "teacher checkpoint '...' does not exist"
        raise CheckpointError(f"{role} {e}") from None
    flag = f"--{role}-model"
    if override:
        return _validated_spec(parse_model_option(override, flag), flag), meta
    spec = meta.get("model_spec")
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) and isinstance(meta.get("arch"), str):
        spec = parse_arch_string(meta["arch"])
    if not isinstance(spec, dict):
        raise CheckpointError(
            f"{role} checkpoint {str(path)!r} does not record its architecture (no model_spec/arch metadata); "
            f"pass {flag} NAME[:key=value,...], e.g. {flag} cnn1d:width=32"
        )
    return _validated_spec(spec, f"{role} checkpoint {str(path)!r} metadata (override with {flag})"), meta


def load_checkpoint_model(path: str | Path, override: str | None, role: str, data: DatasetBundle) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    spec, meta = model_spec_for(path, override, role)
    n = meta.get("num_classes")
    if isinstance(n, int) and n != data.num_classes:
        raise CheckpointError(
            f"{role} checkpoint {str(path)!r} was trained for {n} classes but {data.name} has {data.num_classes}; "
            "evaluate it on the dataset it was trained on"
        )
    flag = f"--{role}-model"
    fix = (f"evaluate it on the dataset it was trained on (--data), or pass {flag}" if override is None
           else f"pass a {flag} that takes these inputs")
    try:
        check_fits(spec, data.name, data.num_classes, data.input_shape, fix=fix)
    except ConfigError as e:
        raise ConfigError(f"{role} checkpoint {str(path)!r}: {e}") from None
    model = build_model(spec, data.num_classes, data.input_shape)
    load_model(model, path, role=role)
    return model.eval(), spec, meta


# ------------------------------------------------------------------------------------------ data


def load_eval_data(name: str, overrides: list[str]) -> tuple[DatasetBundle, dict[str, Any]]:
    """The dataset ``name`` with ``--set data.key=value`` overrides, validated as a config's ``data`` block."""
    raw: dict[str, Any] = {"data": {"name": name}}
    for item in overrides:
        if not item.strip().startswith("data."):
            raise ConfigError(f"--set {item!r}: eval only takes data.* keys, e.g. --set data.num_samples=5000")
    data_cfg = validate(apply_overrides(raw, list(overrides))).data
    options = {"val_fraction": data_cfg.val_fraction, **data_cfg.options}
    return load_dataset(data_cfg.name, **options), {"name": data_cfg.name, **options}


# ------------------------------------------------------------------------------------------ evaluation


def model_figures(logits: dict[str, Tensor], data: DatasetBundle) -> dict[str, float]:
    """``<split>_<metric>`` for accuracy, NLL, Brier and ECE (:func:`metrics.classification_metrics`)."""
    out = {}
    for split in SPLITS:
        y = getattr(data, split).y
        out.update({f"{split}_{k}": v for k, v in M.classification_metrics(logits[split], y).items()})
    return out


def fidelity_figures(teacher: dict[str, Tensor], student: dict[str, Tensor]) -> dict[str, float]:
    """Top-1 agreement and KL(teacher || student) at T = 1 (:func:`metrics.fidelity_metrics`), named as
    in ``summary.json``: no suffix for the test split, ``_train`` for the train split."""
    out = {}
    for split in SPLITS:
        f = M.fidelity_metrics(teacher[split], student[split])
        suffix = "" if split == "test" else f"_{split}"
        out[f"agreement_teacher{suffix}"] = f["agreement"]
        out[f"kl_teacher{suffix}"] = f["kl"]
    return out


def evaluate_pair(
    teacher: str | Path,
    student: str | Path,
    data: str,
    teacher_model: str | None = None,
    student_model: str | None = None,
    overrides: list[str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Load both checkpoints, run them on the test and train splits, and return every figure (see module doc)."""
    dev = select_device(device, key="--device")
    bundle, data_info = load_eval_data(data, list(overrides or []))
    result: dict[str, Any] = {
        "dataset": {**data_info, "test_samples": len(bundle.test), "train_samples": len(bundle.train),
                    "num_classes": bundle.num_classes},
        "epoch": "final (the weights as saved)",
    }
    outputs = {}
    for role, path, override in (("teacher", teacher, teacher_model), ("student", student, student_model)):
        model, spec, meta = load_checkpoint_model(path, override, role, bundle)
        model.to(dev)
        logits = {s: predict_logits(model, getattr(bundle, s).x, device=dev) for s in SPLITS}
        outputs[role] = logits
        result[role] = {"path": str(path), "model_spec": spec, "gen": meta.get("gen"),
                        "params": sum(p.numel() for p in model.parameters()), **model_figures(logits, bundle)}
    result["fidelity"] = fidelity_figures(outputs["teacher"], outputs["student"])
    return result


# ------------------------------------------------------------------------------------------ output


def _spec_text(spec: dict[str, Any]) -> str:
    opts = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({opts})" if opts else spec["name"]


def format_result(result: dict[str, Any]) -> str:
    """A plain-text table: one row per split and model, then the fidelity columns on the student rows."""
    d = result["dataset"]
    lines = [
        f"gendistill eval: {d['name']} (test {d['test_samples']}, train {d['train_samples']} samples), "
        "final weights as saved; T = 1",
        f"  teacher: {result['teacher']['path']}  [{_spec_text(result['teacher']['model_spec'])}]",
        f"  student: {result['student']['path']}  [{_spec_text(result['student']['model_spec'])}]",
        "",
    ]
    head = f"{'split':<6} {'model':<8} {'acc':>7} {'NLL':>7} {'Brier':>7} {'ECE':>7} {'agree(t,s)':>11} {'KL(t||s)':>9}"
    lines += [head, "-" * len(head)]
    fid = result["fidelity"]
    for split in SPLITS:
        suffix = "" if split == "test" else f"_{split}"
        for role in ("teacher", "student"):
            r = result[role]
            cells = " ".join(f"{r[f'{split}_{k}']:>7.4f}" for k in MODEL_FIELDS)
            if role == "student":
                tail = f"{fid[f'agreement_teacher{suffix}']:>11.4f} {fid[f'kl_teacher{suffix}']:>9.4f}"
            else:
                tail = f"{'-':>11} {'-':>9}"
            lines.append(f"{split:<6} {role:<8} {cells} {tail}")
    return "\n".join(lines)

"""One-line messages for pydantic validation errors (config files, ``--set`` overrides, the Python API)."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model = root
    for key in loc:
        field = model.model_fields.get(str(key)) if isinstance(key, str) else None
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def format_validation_error(err: ValidationError, root: type[BaseModel], prefix: tuple[str, ...] = ()) -> str:
    """One line for the first error of validating ``root``; ``prefix`` is the key path of the validated block
    in the whole config (``("train",)`` when a :class:`TrainConfig` is validated on its own)."""
    e = dict(err.errors()[0])
    inner = tuple(e["loc"])
    loc = ".".join(str(p) for p in (*prefix, *inner) if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    # pydantic adds the union branch name to locations; drop those that are not keys
    loc = loc.replace(".ObjectivePreset", "").replace(".list[dict[str,any]]", "")
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        parent = _model_at(root, inner[:-1])
        allowed = ", ".join(parent.model_fields) if parent else ""
        return f"config error: unknown key {loc!r}" + (f"; allowed here: {allowed}" if allowed else "")
    got = e.get("input")
    got_s = "" if isinstance(got, (dict, list)) or e["type"] == "missing" else f" (got {got!r})"
    return f"config error: {loc or 'config'}: {msg}{got_s}"

"""The trainer's settings: one validated schema for the YAML ``train:`` block and the Python API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..validation import format_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainConfig(_Strict):
    """Optimisation settings shared by every generation."""

    epochs: int = Field(30, ge=1, description="passes over the training set")
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum for SGD")
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "step", "multistep", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up before cosine/step/multistep/constant")
    step_size: int = Field(10, ge=1, description="epochs between decays for schedule=step")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor for schedule=step and multistep")
    milestones: list[int] = Field(default_factory=list, description=(
        "schedule=multistep: the lr is multiplied by gamma after each of these epochs (RepDistiller's CIFAR "
        "recipe: [150, 180, 210] of 240)"))
    kd_warmup_epochs: int = Field(0, ge=0, description=(
        "teacher-term warm-up (DKD, Zhao et al. 2022): in epoch e every knowledge term that reads a teacher is "
        "weighted by min(e / kd_warmup_epochs, 1); 0 = off"))
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm; null = off")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    checkpoint_every: int = Field(1, ge=1, description="epochs between resume checkpoints")
    fidelity_samples: int = Field(512, ge=0, description="held-out samples for per-epoch agreement/KL with the teacher")
    snapshot_epochs: list[int] = Field(default_factory=list, description=(
        "epochs after which the evaluated model is saved to <gen dir>/snapshots/epoch<e>.safetensors: a teacher "
        "trajectory, for the rco scheme"))
    teacher_cache: Literal["auto", "off"] = Field(
        "auto", description="auto: compute a fixed teacher's outputs once per generation and reuse them; off: live teacher")
    cache_dtype: Literal["float16", "float32"] = Field("float16", description="storage type of cached teacher outputs")
    cache_mmap_mb: float = Field(512.0, gt=0, description="memory-map caches larger than this into the run directory")
    augment: list[dict[str, Any]] = Field(
        default_factory=list, description="input augmentations, e.g. [{name: shift, max_shift: 3}, {name: noise, std: 0.05}]")
    view_cache_dir: str | None = Field(None, description=(
        "with train.augment [crop_flip] alone: keep the exhaustive teacher view cache (above cache_mmap_mb) in this "
        "folder, keyed by the teacher's weights, so later runs from the same teacher reuse it; null = the "
        "generation's folder, removed when it ends"))
    augment_views: int = Field(
        8, ge=1, description="augmented views per sample whose teacher outputs are cached once and replayed")
    speed_figures: bool = Field(False, description=(
        "measure each generation's inference latency (batch 1) and throughput (batch 256) on the training device "
        "into its record; params, MACs and checkpoint size are always recorded"))
    compile: bool = Field(False, description="torch.compile the evaluated network (the student) for training; back to eager mode when its generation ends")
    channels_last: bool = Field(True, description="channels_last memory format for 4-D inputs on CUDA")
    tensorboard: bool = Field(False, description=(
        "also write every per-epoch column of history.csv as TensorBoard scalars to <gen dir>/tensorboard/ "
        "(needs the tensorboard package: pip install 'gendistill[tensorboard]')"))
    threads: int | None = Field(None, ge=1, description=(
        "CPU intra-op threads (torch.set_num_threads) while the lineage runs; None: PyTorch's default (one per "
        "physical core). On a shared machine use 1 (docs/performance.md, 'Threads')"))


    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, v: bool) -> bool:
        import importlib.util

        if v and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("needs the tensorboard package, which is not installed: pip install tensorboard "
                             "(or gendistill[tensorboard]), or set train.tensorboard: false")
        return v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        from .evaluate import check_device_name

        try:
            return check_device_name(v)
        except ConfigError:
            raise ValueError("must be auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps") from None

    @model_validator(mode="after")
    def _schedule_options(self) -> TrainConfig:
        if self.schedule == "multistep":
            if not self.milestones or sorted(set(self.milestones)) != self.milestones or self.milestones[0] < 1:
                raise ValueError(f"schedule multistep needs train.milestones: increasing epochs >= 1, e.g. [150, 180, "
                                 f"210]; got {self.milestones}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        return self

    @field_validator("teacher_cache", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:  # YAML reads a bare `off` as false
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _snapshots_within_training(self) -> TrainConfig:
        bad = [e for e in self.snapshot_epochs if not 1 <= e <= self.epochs]
        if bad:
            raise ValueError(f"snapshot_epochs {bad} lie outside training (1..{self.epochs}); pick epochs within "
                             "train.epochs")
        return self

    @field_validator("augment", mode="before")
    @classmethod
    def _one_augmentation(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        return [{"name": a} if isinstance(a, str) else a for a in (v or [])]

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from ..data.augment import build_augmentations

        try:
            build_augmentations(v)
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("config error: train.augment").lstrip(".: ")) from None
        return v


def parse_train(train: TrainConfig | dict[str, Any] | None) -> TrainConfig:
    """A :class:`TrainConfig` from a dict of its fields (Python API), with config errors as one line."""
    if isinstance(train, TrainConfig):
        return train
    if train is not None and not isinstance(train, dict):
        raise ConfigError(f"config error: train must be a TrainConfig or a dict of its fields, got {type(train).__name__}")
    try:
        return TrainConfig.model_validate(train or {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, TrainConfig, ("train",))) from None

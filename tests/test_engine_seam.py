"""The engine's seams: a new domain, a DataLoader-backed dataset and a new scheme run through the same lineage,
trainer and run directory without touching them."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from gendistill import rundir
from gendistill.data import DatasetBundle, DatasetSplit, Split
from gendistill.data.loader import TensorLoader
from gendistill.domains import Domain
from gendistill.engine import DistillTask, TrainConfig, Trainer
from gendistill.engine.evaluate import predict_logits
from gendistill.engine.task import Task
from gendistill.knowledge import Batch, KnowledgeTerm, Objective, Outputs
from gendistill.lineage import Lineage
from gendistill.registry import DOMAINS
from gendistill.teachers import EnsembleTeacher, FrozenTeacher

# ---------------------------------------------------------------------------------------- a toy domain
# Sequence labelling: every position of a sequence has its own label (here: the parity of the sum of the
# last two tokens, which needs one step of memory).
# It is the worked example of docs/design.md, "Adding a domain".


class Tagger(nn.Module):
    def __init__(self, vocab: int, classes: int, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:  # (N, L) tokens -> (N, L, C) logits
        return self.head(self.rnn(self.embed(x))[0])


class TagBatches:
    """In-memory batches of token sequences and per-position labels (the trainer's BatchSource protocol)."""

    memory_format = None

    def __init__(self, split: Split, batch_size: int, seed: int):
        self.split, self.num_samples = split, len(split)
        self.loader = TensorLoader(split.x, split.y, batch_size, shuffle=True, seed=seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y, idx in self.loader:
            yield Batch(x, y, idx)

    def example(self, n: int) -> Batch:
        return Batch(self.split.x[:n], self.split.y[:n], torch.arange(n))

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


class TokenKD(KnowledgeTerm):
    """Per-position KL(teacher || student) at temperature T, averaged over labelled positions."""

    name = "token_kd"

    def __init__(self, temperature: float = 2.0):
        super().__init__()
        self.T = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        real = batch.y != -100
        s = F.log_softmax(student.logits[real] / self.T, -1)
        t = F.log_softmax(teacher.logits[real] / self.T, -1)
        return F.kl_div(s, t, reduction="batchmean", log_target=True) * self.T**2


class TokenCE(KnowledgeTerm):
    name = "ce"
    needs_teacher = False

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        return F.cross_entropy(student.logits.flatten(0, 1), batch.y.flatten(), ignore_index=-100)


class TaggingDomain(Domain):
    name = "toy-tagging"
    train_keys = ("token_acc",)

    def build_model(self, spec, data):
        return spec() if callable(spec) else Tagger(data.num_classes * 2, data.num_classes)

    def check_model(self, spec, data, where):
        model = self.build_model(spec, data)
        with torch.no_grad():
            model(data.train.x[:2])
        return model

    def check_teacher(self, teacher, data):
        pass

    def train_source(self, data, train, *, seed, device, views):
        return TagBatches(data.train, train.batch_size, seed)

    def default_task(self, student, objective, teacher) -> Task:
        return DistillTask(student, objective, teacher)

    def predict(self, model, split):
        return predict_logits(model, split.x)

    def metrics(self, model, pred, split):
        real = split.y != -100
        return {"token_acc": (pred.argmax(-1) == split.y)[real].float().mean().item()}

    def epoch_metrics(self, model, split):
        return {"test_token_acc": self.metrics(model, self.predict(model, split), split)["token_acc"]}

    def fidelity(self, teacher_pred, student_pred):
        t, s = F.log_softmax(teacher_pred, -1), F.log_softmax(student_pred, -1)
        return {"agreement": (t.argmax(-1) == s.argmax(-1)).float().mean().item(),
                "kl": (t.exp() * (t - s)).sum(-1).mean().item()}

    def ensemble(self, preds):
        return torch.stack([p.softmax(-1) for p in preds]).mean(0).log()

    def teacher(self, models, layers):
        return FrozenTeacher(models[0], layers) if len(models) == 1 else EnsembleTeacher(models, layers)


DOMAINS.register("toy-tagging")(TaggingDomain)


def parity_data(n_train: int = 384, n_test: int = 128, length: int = 12, seed: int = 0) -> DatasetBundle:
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        x = torch.randint(0, 4, (n, length), generator=g)
        y = torch.zeros_like(x)
        y[:, 1:] = (x[:, 1:] + x[:, :-1]) % 2
        y[:, :2] = -100  # unlabelled positions: every loss and metric must skip them
        return Split(x, y)

    return DatasetBundle("parity", split(n_train), split(n_test), 2, (length,), domain="toy-tagging")


def test_a_new_domain_runs_through_the_lineage_trainer_and_run_directory(tmp_path):
    data = parity_data()
    cfg = TrainConfig(epochs=12, batch_size=64, lr=0.01, fidelity_samples=64)
    objective = lambda: Objective([(TokenCE(), 1.0), (TokenKD(2.0), 1.0)])  # noqa: E731
    lineage = Lineage(student=lambda: Tagger(4, 2), generations=2, objective=objective,
                      gen0_objective=lambda: Objective([(TokenCE(), 1.0)]), train=cfg, progress="off")
    result = lineage.fit(data, out=tmp_path / "run")
    gens = result.generations
    assert [g["teacher"] for g in gens] == [None, "gen0", "gen1"]
    assert gens[0]["test_token_acc"] > 0.9, gens[0]  # the task is learnable; chance is 0.5
    assert gens[2]["agreement_teacher"] > 0.9 and gens[2]["kl_teacher"] >= 0
    assert "train_token_acc" in gens[1] and "test_acc" not in gens[1]  # the domain's own metric keys
    assert result.ensembles and "test_token_acc" in result.ensembles[0]
    # the same run directory contract, and the trainer counted accuracy over labelled positions only
    history = rundir.read_history(rundir.gen_dir(tmp_path / "run", 1))
    assert {"train_token_kd", "train_acc", "test_token_acc", "holdout_agreement"} <= set(history[-1])
    assert history[-1]["train_acc"] > 0.85
    metrics = json.loads((tmp_path / "run/gen2/metrics.json").read_text())
    assert metrics["teacher_outputs"].startswith("live teacher")  # this toy domain caches nothing


# ---------------------------------------------------------------------------------------- DataLoader path


class Rows(Dataset):
    """A map-style dataset of ``(x, y)`` rows, as a user's on-disk dataset would be."""

    def __init__(self, split: Split):
        self.x, self.y = split.x, split.y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def _numbers(result):
    return [{k: v for k, v in g.items() if isinstance(v, float) and "seconds" not in k} for g in result.generations]


def test_a_dataloader_backed_dataset_trains_to_the_same_numbers(tiny_data, tmp_path, monkeypatch):
    streamed = DatasetBundle(tiny_data.name, DatasetSplit(Rows(tiny_data.train), num_workers=2),
                             DatasetSplit(Rows(tiny_data.test)), tiny_data.num_classes, tiny_data.input_shape)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.01, fidelity_samples=32)
    make = lambda: Lineage(student={"name": "mlp", "width": 32}, generations=1, train=cfg, progress="off")  # noqa: E731
    in_memory = make().fit(tiny_data)
    from_loader = make().fit(streamed, out=tmp_path / "dl")
    assert _numbers(from_loader) == _numbers(in_memory)
    assert from_loader.generations[1]["teacher_outputs"].startswith("cached teacher outputs")

    # resume from a mid-generation checkpoint on the DataLoader path gives the same numbers
    from gendistill.engine import trainer as trainer_mod

    real = trainer_mod.Trainer._save

    def crash(self, run, epoch):
        real(self, run, epoch)
        if self.desc == "gen1" and epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_save", crash)
    try:
        make().fit(streamed, out=tmp_path / "cut")
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(trainer_mod.Trainer, "_save", real)
    resumed = make().fit(streamed, out=tmp_path / "cut", resume=True)
    assert _numbers(resumed) == _numbers(in_memory)


def test_trainer_runs_any_task_with_any_batch_source():
    """The trainer needs only the Task protocol and a BatchSource: here a hand-made task and source."""

    class Regress(Task):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 1)

        @property
        def eval_model(self):
            return self.net

        def forward(self, batch):
            return {"loss": F.mse_loss(self.net(batch.x).squeeze(-1), batch.y.float())}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    split = Split(x, (x @ torch.tensor([1.0, -2.0, 0.5])))
    history = Trainer(TrainConfig(epochs=20, batch_size=32, lr=0.05, weight_decay=0.0), progress="off").fit(
        Regress(), TagBatches(split, 32, seed=0), num_classes=1)
    assert history[-1]["train_loss"] < 0.01 * history[0]["train_loss"]
    assert history[-1]["train_acc"] is None  # no logits returned, no accuracy

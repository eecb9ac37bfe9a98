"""Sequence-level knowledge distillation (Kim & Rush 2016, arXiv:1606.07947): the student is trained on the
teacher's beam-search outputs for the training sources instead of (or, with ``seq_interp``, interpolated
with) the references.

* ``seq_kd``: target of source s = the teacher's best beam hypothesis ``argmax_{y in beam} log p_T(y | s)``;
* ``seq_interp`` (sequence-level interpolation): target = the beam candidate closest to the reference by
  sentence BLEU, ``argmax_{y in K-best} BLEU(y, y_ref)``.

The targets are decoded once, when the generation starts, and kept in the task's ``targets`` buffer, so they
are saved with every epoch checkpoint in the run directory and read back on resume. The objective is applied
to the new pairs (``token_ce`` learns the teacher's outputs; a teacher term such as ``word_kd`` also works and
reads the live teacher on them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective
from ..nlp.decoding import as_inputs, beam_search
from ..nlp.metrics import sentence_bleu
from ..nlp.models import SeqEnsemble, is_sequence_model
from .spec import SchemeContext, scheme


class SequenceKDTask(StudentTask):
    """Train the student through ``objective`` on (source, teacher output) pairs decoded once."""

    def __init__(self, student, objective: Objective, teacher, data, beam: int, closest_to_reference: bool):
        super().__init__()
        if teacher is None:
            raise ConfigError("sequence-level KD needs a teacher (generation >= 1)")
        if not is_sequence_model(student):
            raise ConfigError("sequence-level KD needs sequence models (seq_decoder, seq_encdec)")
        if beam < 1:
            raise ConfigError(f"scheme.beam must be >= 1, got {beam}")
        self.set_student(student, objective.student_layers)
        self.objective = objective
        self.set_teacher(teacher)
        self.data, self.beam, self.closest = data, int(beam), closest_to_reference
        self.register_buffer("targets", torch.zeros(0, dtype=torch.long))

    def setup(self, *, num_train: int, num_classes: int) -> None:
        super().setup(num_train=num_train, num_classes=num_classes)
        self.targets = self.decode_targets()

    @torch.no_grad()
    def decode_targets(self, batch_size: int = 256) -> Tensor:
        models = self.teacher.models
        model = models[0] if len(models) == 1 else SeqEnsemble(models)
        dev = next(self.student.parameters()).device
        split, S = self.data.train, self.student.src_len
        tok = getattr(self.data, "tokenizer", None)
        if self.closest and tok is None:
            raise ConfigError("seq_interp needs a tokenizer to score candidates by BLEU (a bundled sequence task)")
        out = []
        for i in range(0, len(split), batch_size):
            src = split.x[i : i + batch_size, :S].to(dev)
            n_best = self.beam if self.closest else 1
            cands, _ = beam_search(model, src, self.beam, n_best=n_best)
            if not self.closest:
                out.append(cands[:, 0])
                continue
            for j, row in enumerate(cands):
                ref = tok.split(tok.decode(split.y[i + j].clamp_min(0)))
                scores = [sentence_bleu(tok.split(tok.decode(c)), ref) if c[0] != 0 else -1.0 for c in row]
                out.append(row[max(range(len(scores)), key=scores.__getitem__)][None])
        return torch.cat(out).to(dev)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        S = self.student.src_len
        x, y = as_inputs(batch.x[:, :S], self.targets[batch.index])
        pairs = Batch(x, y, None)
        student = self.run_student(x)
        teacher = self.teacher(x, None) if self.objective.needs_teacher else None
        parts = self.objective(student, teacher, pairs)
        return parts


@scheme("seq_kd", kind="sequence", paper="Kim & Rush 2016, Sequence-Level Knowledge Distillation (arXiv:1606.07947)",
        summary="sequence-level KD: the student learns the teacher's beam-search outputs (decoded once)")
def seq_kd(ctx: SchemeContext, beam: int = 4) -> SequenceKDTask:
    """Sequence-level KD (Kim & Rush 2016): targets = the teacher's best beam-``beam`` hypothesis per source."""
    return SequenceKDTask(ctx.student, ctx.objective, ctx.teacher, ctx.data, beam, closest_to_reference=False)


@scheme("seq_interp", kind="sequence", paper="Kim & Rush 2016, Sequence-Level Knowledge Distillation (arXiv:1606.07947)",
        summary="sequence-level interpolation: the teacher's beam candidate closest to the reference by sentence BLEU")
def seq_interp(ctx: SchemeContext, beam: int = 4) -> SequenceKDTask:
    """Sequence-level interpolation (Kim & Rush 2016): targets = the beam candidate closest to the reference
    by sentence BLEU."""
    return SequenceKDTask(ctx.student, ctx.objective, ctx.teacher, ctx.data, beam, closest_to_reference=True)

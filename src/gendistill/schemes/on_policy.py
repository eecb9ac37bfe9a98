"""On-policy distillation (GKD, Agarwal et al. 2024, arXiv:2306.13649; MiniLLM, Gu et al. 2024): in a
fraction ``lam`` of the batches the student samples its own outputs for the sources (temperature
``temperature``) and the teacher scores them token by token; the objective's teacher terms (``word_kd``,
``reverse_kl``, ``gkd_jsd``, ``tv``) are then minimised on the student's own prefixes, so the student learns
where it actually goes at test time. The other batches use the references (all terms). Label terms are
logged but not trained on sampled outputs.

Which batches are on-policy is a fixed low-discrepancy sequence of the step count (``frac(step * phi) < lam``),
kept in the task's state so a resumed run makes the same choices.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..engine.task import StudentTask
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective
from ..nlp.decoding import as_inputs, sample
from ..nlp.models import is_sequence_model
from .spec import SchemeContext, scheme

GOLDEN = 0.6180339887498949


class OnPolicyTask(StudentTask):
    def __init__(self, student, objective: Objective, teacher, lam: float, temperature: float):
        super().__init__()
        if teacher is None or not objective.needs_teacher:
            raise ConfigError("on_policy needs a teacher and a teacher term in the objective (word_kd, reverse_kl, "
                              "gkd_jsd or tv)")
        if not is_sequence_model(student):
            raise ConfigError("on_policy needs sequence models (seq_decoder, seq_encdec)")
        if not 0.0 <= lam <= 1.0 or temperature <= 0:
            raise ConfigError(f"on_policy: lam must be in [0, 1] and temperature > 0, got {lam}, {temperature}")
        self.set_student(student, objective.student_layers)
        self.objective = objective
        self.set_teacher(teacher)
        self.lam, self.temperature = float(lam), float(temperature)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def on_policy_now(self) -> bool:
        return ((int(self.steps) + 1) * GOLDEN) % 1.0 < self.lam

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        on = self.on_policy_now()
        self.steps += 1
        if not on:
            student = self.run_student(batch.x)
            parts = self.objective(student, self.teacher(batch.x, None), batch)
            parts["on_policy"] = torch.zeros((), device=batch.x.device)
            parts["logits"] = student.logits
            return parts
        S = self.student.src_len
        src = batch.x[:, :S]
        tokens = sample(self.student, src, temperature=self.temperature)
        x, y = as_inputs(src, tokens)
        pairs = Batch(x, y, None)
        student = self.run_student(x)
        parts = self.objective(student, self.teacher(x, None), pairs)
        loss = sum(w * parts[n] for n, t, w in zip(self.objective.names, self.objective.terms, self.objective.weights)
                   if t.needs_teacher)
        parts["loss"] = loss
        parts["on_policy"] = torch.ones((), device=x.device)
        return parts


@scheme("on_policy", kind="sequence", paper="Agarwal et al. 2024, On-Policy Distillation of Language Models (GKD, "
        "arXiv:2306.13649); Gu et al. 2024 (MiniLLM)",
        summary="on-policy distillation: a fraction lam of batches use student samples scored by the teacher")
def on_policy(ctx: SchemeContext, lam: float = 0.5, temperature: float = 1.0) -> OnPolicyTask:
    """On-policy distillation (GKD): a fraction ``lam`` of batches on student samples scored by the teacher."""
    return OnPolicyTask(ctx.student, ctx.objective, ctx.teacher, lam, temperature)

"""The teacher cache for sequences: the teacher's top-k log-probabilities per target position (plus, implicitly,
the remaining mass ``1 - sum``), computed once over the training items and replayed by item index, so
word-level KD costs no teacher forward pass. ``k = 0`` keeps every log-probability (exact)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..knowledge.base import Outputs


class TopKTeacher:
    """Replays ``(log-probs, token ids)`` of shape ``(N, T, k)`` by ``batch.index``; calls without an index
    (inputs that are not training items) run the live teacher."""

    def __init__(self, live, logp: Tensor, index: Tensor | None, how: str):
        self.live, self.logp, self.index, self.how = live, logp, index, how

    @classmethod
    def from_predictions(cls, live, pred: Tensor, k: int, path: Path | None = None,
                         dtype: torch.dtype = torch.float16) -> TopKTeacher:
        """From the teacher's teacher-forced logits over the training split (NaN at unlabelled positions);
        ``k = 0`` (or k >= the vocabulary) keeps every log-probability."""
        logp = torch.nan_to_num(pred.float(), nan=0.0).log_softmax(-1)
        if 0 < k < logp.shape[-1]:
            values, index = logp.topk(k, -1)
            index = index.to(torch.int16 if logp.shape[-1] < 2**15 else torch.int32)
        else:
            values, index = logp, None
        mb = (values.numel() * torch.empty((), dtype=dtype).element_size()
              + (index.numel() * index.element_size() if index is not None else 0)) / 2**20
        how = f"in memory ({mb:.1f} MB)"
        if path is not None:
            from safetensors.torch import save_file

            file = f"{path}.topk.safetensors"
            Path(file).parent.mkdir(parents=True, exist_ok=True)
            tensors = {"logp": values.to(dtype).contiguous()}
            if index is not None:
                tensors["index"] = index.contiguous()
            save_file(tensors, file)
            how += f", stored at {file}"
        return cls(live, values.to(dtype), index, how)

    @property
    def models(self) -> list[nn.Module]:
        return self.live.models

    def to(self, device: torch.device) -> TopKTeacher:
        self.live.to(device)
        self.logp = self.logp.to(device)
        self.index = self.index.to(device) if self.index is not None else None
        return self

    def __call__(self, x: Tensor, index: Tensor | None = None, view: Tensor | None = None) -> Outputs:
        if index is None:
            return self.live(x)
        idx = index.to(self.logp.device)
        if self.index is None:
            return Outputs(self.logp[idx].float())
        return Outputs(self.logp[idx].float(), {"topk_index": self.index[idx].long()})

    def close(self) -> None:
        self.live.close()

    def describe(self) -> str:
        n, t, k = self.logp.shape
        what = "every log-prob" if self.index is None else f"top-{k} log-probs"
        return f"cached teacher {what} per position ({n} x {t} x {k}, {self.how})"


def topk_kl_error(pred: Tensor, student: Tensor, ks: list[int]) -> dict[int, float]:
    """For each k: mean |KL_k - KL| over real positions, where KL is the full KL(teacher || student) and
    KL_k the one between the k+1-bucket coarsenings a top-k cache gives (:mod:`gendistill.nlp.losses`)."""
    from .losses import _rows, forward_kl

    real = ~torch.isnan(pred[..., 0])
    t, s = pred[real].float(), student[real].float()
    full = _rows(s, t, None, 1.0, forward_kl)
    out = {}
    for k in ks:
        values, index = t.log_softmax(-1).topk(min(k, t.shape[-1]), -1)
        out[k] = (_rows(s, values, index, 1.0, forward_kl) - full).abs().mean().item()
    return out

"""Representation similarity: linear CKA between the penultimate features of models.

Linear centered kernel alignment (Kornblith, Norouzi, Lee & Hinton 2019, *Similarity of Neural Network
Representations Revisited*, arXiv:1905.00414). For feature matrices ``X`` (``N x D1``) and ``Y``
(``N x D2``) of the same ``N`` inputs, with columns centered (``X <- X - mean_rows(X)``):

``CKA(X, Y) = ||Y^T X||_F^2 / ( ||X^T X||_F * ||Y^T Y||_F )``

It lies in ``[0, 1]``, equals 1 for ``Y = X``, and is invariant to orthogonal transforms and isotropic
scaling of either representation (not to arbitrary invertible linear maps). Computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .knowledge.taps import FeatureTap, penultimate_module


def _centered(x: Tensor) -> Tensor:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    return x - x.mean(0, keepdim=True)


def _cross(x: Tensor, y: Tensor) -> Tensor:
    """``||Y^T X||_F^2`` for centered ``x``, ``y``; uses the ``N x N`` Gram form when that is cheaper."""
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if d1 * d2 <= n * (d1 + d2):
        return (y.T @ x).pow(2).sum()
    return ((x @ x.T) * (y @ y.T)).sum()


def _cka_centered(x: Tensor, y: Tensor, norm_x: Tensor, norm_y: Tensor) -> float:
    denom = norm_x * norm_y
    if denom == 0:
        return float("nan")  # a constant representation: CKA is undefined
    return (_cross(x, y) / denom).item()


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear CKA between ``X`` (``N x D1``) and ``Y`` (``N x D2``); extra dims are flattened.

    Returns NaN when either representation is constant over the ``N`` inputs.
    """
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"CKA needs the same inputs for both: got {X.shape[0]} and {Y.shape[0]} rows")
    if X.shape[0] < 2:
        raise ValueError("CKA needs at least 2 inputs")
    x, y = _centered(X), _centered(Y)
    return _cka_centered(x, y, _cross(x, x).sqrt(), _cross(y, y).sqrt())


def cka_matrix(features: Sequence[Tensor]) -> Tensor:
    """``K x K`` float64 matrix of :func:`linear_cka` between every pair of ``K`` feature matrices."""
    if not features:
        raise ValueError("cka_matrix needs at least one feature matrix")
    rows = {f.shape[0] for f in features}
    if len(rows) != 1:
        raise ValueError(f"all feature matrices must have the same number of rows, got {sorted(rows)}")
    centered = [_centered(f) for f in features]
    norms = [_cross(c, c).sqrt() for c in centered]
    k = len(centered)
    out = torch.empty(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(i, k):
            out[i, j] = out[j, i] = _cka_centered(centered[i], centered[j], norms[i], norms[j])
    return out


@torch.no_grad()
def penultimate_features(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """``N x D`` float32 (CPU) input of the model's last ``nn.Linear`` for the inputs ``x``.

    The model runs in eval mode without gradients, in batches of ``batch_size`` on the device of its
    parameters; its train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layer = penultimate_module(model)
    if layer is model:  # the model is a single linear layer: its input is x itself
        return x.reshape(x.shape[0], -1).float().cpu()
    name = next(n for n, m in model.named_modules() if m is layer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with FeatureTap(model, [name], inputs=True) as tap:
            for start in range(0, x.shape[0], batch_size):
                xb = x[start : start + batch_size].to(device)
                model(xb)
                h = tap.features[name]
                chunks.append(h.reshape(h.shape[0], -1).float().cpu())
                tap.clear()
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("penultimate_features got no inputs")
    return torch.cat(chunks)

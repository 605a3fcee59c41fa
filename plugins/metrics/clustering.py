"""How well predicted categories match true labels: one-to-one matched accuracy, NMI, purity."""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment


def contingency(predicted: torch.Tensor, labels: torch.Tensor, categories: int, classes: int) -> torch.Tensor:
    """(categories x classes) counts of (predicted category, true label) pairs."""
    table = torch.zeros(categories * classes, dtype=torch.int64)
    table.index_add_(0, predicted.long() * classes + labels.long(), torch.ones_like(labels, dtype=torch.int64))
    return table.view(categories, classes)


def matched_accuracy(table: torch.Tensor) -> float:
    """Accuracy after matching categories to labels one-to-one (Hungarian method on the counts)."""
    rows, columns = linear_sum_assignment(-table.numpy())
    return float(table[rows, columns].sum()) / max(int(table.sum()), 1)


def purity(table: torch.Tensor) -> float:
    """Each category mapped to its most frequent label (many-to-one): flatters, a secondary figure."""
    return float(table.max(dim=1).values.sum()) / max(int(table.sum()), 1)


def normalized_mutual_information(table: torch.Tensor) -> float:
    """I(pred; label) / mean(H(pred), H(label)): the arithmetic normalisation, as scikit-learn's default."""
    joint = table.double() / table.sum()
    p_pred, p_label = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    outer = p_pred[:, None] * p_label[None, :]
    mutual = float((joint[nonzero] * (joint[nonzero] / outer[nonzero]).log()).sum())
    entropy = lambda p: -float((p[p > 0] * p[p > 0].log()).sum())
    h_pred, h_label = entropy(p_pred), entropy(p_label)
    if h_pred == 0 or h_label == 0:
        return 1.0 if h_pred == h_label else 0.0
    return max(0.0, mutual / ((h_pred + h_label) / 2)) if math.isfinite(mutual) else 0.0

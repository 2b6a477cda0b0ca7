"""Making confidences mean what they say: temperature scaling, expected calibration error, and the
confidence threshold below which a prediction is shown as "unidentified — needs review"."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature minimising validation NLL (golden-section search on log T; NLL is unimodal in T)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on zero validation samples")
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc = negative_log_likelihood(logits, labels, float(np.exp(c)))
    fd = negative_log_likelihood(logits, labels, float(np.exp(d)))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = negative_log_likelihood(logits, labels, float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = negative_log_likelihood(logits, labels, float(np.exp(d)))
    return float(np.exp((a + b) / 2))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| x share."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    confidences = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 joins the first bin.
    indices = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for index in range(bins):
        members = indices == index
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidences[members].mean())
    return float(ece)


def choose_confidence_threshold(
    confidences: np.ndarray, correct: np.ndarray, *, target_accuracy: float = 0.995, max_flagged: float = 0.05
) -> float:
    """The lowest threshold at which the predictions kept (confidence >= threshold) reach target_accuracy,
    while flagging at most max_flagged of the validation set; 0.0 when nothing needs flagging."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if len(confidences) == 0:
        return 0.0
    order = np.argsort(confidences)
    sorted_conf = confidences[order]
    sorted_correct = correct[order]
    n = len(sorted_conf)
    # kept_accuracy[k]: accuracy of the predictions from rank k upwards (the k least confident flagged).
    kept_correct = np.cumsum(sorted_correct[::-1])[::-1]
    kept_accuracy = kept_correct / np.arange(n, 0, -1)
    max_rank = int(np.floor(max_flagged * n))
    for rank in range(0, max_rank + 1):
        if rank == n:
            break
        if kept_accuracy[rank] >= target_accuracy:
            return 0.0 if rank == 0 else float(sorted_conf[rank])
    return float(sorted_conf[min(max_rank, n - 1)])

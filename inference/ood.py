"""Out-of-distribution score on the model's pooled features.

A softmax probability says nothing about inputs unlike the training data (a classifier shown another
lab's cells was wrong on almost all of them with top probabilities above 0.99), so the score works on
features: the Mahalanobis distance to the nearest class mean under a shared, shrunk covariance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class MahalanobisScorer:
    def __init__(self, *, means: np.ndarray, whitening: np.ndarray):
        # whitening W satisfies W @ W.T = inverse covariance, so distance = ||(f - mean) @ W||.
        self.means = np.asarray(means, dtype=np.float64)
        self.whitening = np.asarray(whitening, dtype=np.float64)
        if self.means.ndim != 2 or self.whitening.shape != (self.means.shape[1], self.means.shape[1]):
            raise ValueError(f"inconsistent statistics: means {self.means.shape}, whitening {self.whitening.shape}")
        self._white_means = self.means @ self.whitening

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, *, n_classes: int) -> MahalanobisScorer:
        from sklearn.covariance import LedoitWolf

        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        present = [c for c in range(n_classes) if np.any(labels == c)]
        if not present:
            raise ValueError("cannot fit out-of-distribution statistics on zero samples")
        means = np.stack([features[labels == c].mean(axis=0) for c in present])
        centred = features - means[np.searchsorted(present, labels)]
        covariance = LedoitWolf().fit(centred).covariance_
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        # Floor tiny (or, for dead features, zero) variances so the whitening stays finite.
        eigenvalues = np.maximum(eigenvalues, max(float(eigenvalues.max()) * 1e-9, 1e-12))
        whitening = eigenvectors / np.sqrt(eigenvalues)
        return cls(means=means, whitening=whitening)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Squared distance to the nearest class mean, divided by the feature dimension (about 1 in
        distribution), so thresholds read the same for every backbone."""
        white = np.asarray(features, dtype=np.float64) @ self.whitening
        distances = (
            (white**2).sum(axis=1)[:, None] - 2.0 * white @ self._white_means.T + (self._white_means**2).sum(axis=1)
        )
        return np.maximum(distances.min(axis=1), 0.0) / self.means.shape[1]

    def save(self, path: Path) -> None:
        with open(path, "wb") as stream:
            np.savez(stream, means=self.means.astype(np.float32), whitening=self.whitening.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> MahalanobisScorer:
        with np.load(path, allow_pickle=False) as data:
            return cls(means=data["means"], whitening=data["whitening"])


def choose_ood_threshold(validation_scores: np.ndarray, *, quantile: float = 0.99) -> float:
    """Flags about (1 - quantile) of in-distribution validation cells; the rest of the budget goes to the
    unknown inputs the threshold exists for."""
    scores = np.asarray(validation_scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("cannot choose an out-of-distribution threshold on zero validation samples")
    return float(np.quantile(scores, quantile))

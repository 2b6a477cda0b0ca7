import numpy as np
import pytest

from inference.calibration import choose_confidence_threshold, expected_calibration_error, fit_temperature, softmax
from inference.ood import MahalanobisScorer, choose_ood_threshold


def test_fit_temperature_softens_overconfident_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=600)
    # Correct 70% of the time but with logits saying ~99%: the fitted temperature must exceed 1.
    predicted = np.where(rng.random(600) < 0.7, labels, (labels + 1) % 3)
    logits = np.eye(3)[predicted] * 6.0
    temperature = fit_temperature(logits, labels)
    assert temperature > 2.0
    calibrated = expected_calibration_error(softmax(logits / temperature), labels)
    assert calibrated < expected_calibration_error(softmax(logits), labels)
    assert calibrated < 0.05


def test_confidence_threshold_reaches_target_accuracy_on_kept_predictions():
    confidences = np.array([0.3, 0.4, 0.5, 0.9, 0.95, 0.99, 0.99, 0.99, 0.99, 0.99])
    correct = np.array([False, False, True, True, True, True, True, True, True, True])
    threshold = choose_confidence_threshold(confidences, correct, target_accuracy=1.0, max_flagged=0.5)
    assert threshold == pytest.approx(0.5)
    assert correct[confidences >= threshold].all()


def test_confidence_threshold_is_zero_when_everything_is_right():
    assert choose_confidence_threshold(np.array([0.6, 0.9]), np.array([True, True])) == 0.0


def test_confidence_threshold_respects_the_flagging_budget():
    confidences = np.linspace(0.5, 1.0, 100)
    correct = np.ones(100, dtype=bool)
    correct[::2] = False  # never reaches the target
    threshold = choose_confidence_threshold(confidences, correct, target_accuracy=0.99, max_flagged=0.1)
    assert (confidences < threshold).mean() <= 0.1


def test_mahalanobis_scores_shifted_features_higher():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, size=(3, 16))
    labels = rng.integers(0, 3, size=900)
    features = means[labels] + rng.normal(0, 1, size=(900, 16))
    scorer = MahalanobisScorer.fit(features, labels, n_classes=3)
    threshold = choose_ood_threshold(scorer.score(features), quantile=0.99)
    shifted = means[labels[:100]] + rng.normal(0, 1, size=(100, 16)) + 4.0
    assert (scorer.score(shifted) > threshold).mean() > 0.9


def test_mahalanobis_statistics_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(50, 4)), rng.integers(0, 2, size=50)
    scorer = MahalanobisScorer.fit(features, labels, n_classes=2)
    scorer.save(tmp_path / "ood.npz")
    loaded = MahalanobisScorer.load(tmp_path / "ood.npz")
    assert np.allclose(loaded.score(features), scorer.score(features), rtol=1e-4)

"""Operating points (chexnet.operating): the thresholds are the best ones a brute-force search over every
distinct score finds, and the rates at them are what counting gives."""
import numpy as np
import pytest

from chexnet import operating


def brute_force(y, p, target):
    """(Youden threshold, fixed-sensitivity threshold) by trying every distinct score, highest first."""
    best_j, youden, at_target = -np.inf, None, None
    for t in np.unique(p)[::-1]:
        sens, spec = (p[y == 1] >= t).mean(), (p[y == 0] < t).mean()
        if sens + spec - 1 > best_j:
            best_j, youden = sens + spec - 1, t
        if at_target is None and sens >= target:
            at_target = t
    return youden, at_target


@pytest.mark.parametrize("seed", range(5))
def test_thresholds_are_the_brute_force_optima_with_ties_in_the_scores(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random((n, 3)) < [0.1, 0.3, 0.5]).astype(int)
    p = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), 2)  # rounded: many tied scores
    points = operating.choose(y, p, ["a", "b", "c"], sensitivity=0.85)
    for c, point in enumerate(points):
        youden, at_target = brute_force(y[:, c], p[:, c], 0.85)
        assert point["youden"] == pytest.approx(youden) and point["sensitivity"] == pytest.approx(at_target)


def test_rates_at_the_thresholds_are_counted_on_the_other_split():
    y = np.array([[0], [0], [1], [1], [0], [1]])
    p = np.array([[0.1], [0.4], [0.35], [0.8], [0.7], [0.9]])
    (point,) = operating.choose(y, p, ["x"], sensitivity=1.0)
    assert point["sensitivity"] == pytest.approx(0.35)  # every positive called: the lowest positive score
    assert point["youden"] == pytest.approx(0.8)  # J = 2/3 - 0: higher than 1 - 2/3 at 0.35
    test_y, test_p = np.array([[1], [1], [0], [0]]), np.array([[0.85], [0.5], [0.36], [0.2]])
    (row,) = operating.measure(test_y, test_p, [point])
    assert (row["youden_sensitivity"], row["youden_specificity"]) == (0.5, 1.0)
    assert (row["sensitivity_sensitivity"], row["sensitivity_specificity"]) == (1.0, 0.5)
    assert (row["positives"], row["negatives"]) == (2, 2)


def test_a_class_without_positives_gets_no_threshold_and_no_rates():
    y, p = np.zeros((5, 1), int), np.linspace(0, 1, 5)[:, None]
    (point,) = operating.choose(y, p, ["none"], sensitivity=0.9)
    assert point == {"pathology": "none", "youden": None, "sensitivity": None}
    (row,) = operating.measure(y, p, [point])
    assert row["youden_sensitivity"] is None and row["youden_threshold"] is None
    assert "| none | 0 | n/a |" in operating.markdown([row], "test", "val", 0.9)


def test_uncertain_labels_are_left_out_of_the_choice_and_the_rates():
    y = np.array([[0], [0], [1], [1], [-1], [-1]])
    p = np.array([[0.1], [0.4], [0.35], [0.8], [0.99], [0.0]])
    (point,) = operating.choose(y, p, ["x"], sensitivity=1.0)
    assert point["sensitivity"] == pytest.approx(0.35) and point["youden"] == pytest.approx(0.8)
    (row,) = operating.measure(y, p, [point])
    assert (row["positives"], row["negatives"], row["youden_specificity"]) == (2, 2, 1.0)

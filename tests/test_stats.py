"""Wilson intervals and proportions for evaluation tables (evaluation/stats.py)."""
import pytest

from liquid_control.evaluation.stats import proportion, wilson_interval


def test_wilson_interval_known_values():
    # Known answers worked by hand from the Wilson formula (Brown, Cai & DasGupta 2001, eq. 4).
    low, high = wilson_interval(98, 100)
    assert low == pytest.approx(0.92996, abs=1e-4) and high == pytest.approx(0.99450, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.27753, abs=1e-4)
    low, high = wilson_interval(100, 100)
    assert high == 1.0 and low == pytest.approx(0.96301, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_rejects_bad_counts():
    for args in [(-1, 3), (4, 3), (1.5, 3), (True, 3)]:
        with pytest.raises(ValueError):
            wilson_interval(*args)
    p = proportion([True, True, False, True])
    assert p.successes == 3 and p.trials == 4 and p.low < 0.75 < p.high

"""Calibration drift: ECE against what a calibrated model shows by chance on the same rows."""

from __future__ import annotations

import math

import numpy as np

from leadscore.modeling.metrics import expected_calibration_error


def ece_by_chance(p, n_bins: int, draws: int, seed: int, quantile: float = 0.95) -> float:
    """The ``quantile`` of ECE that a perfectly calibrated model shows on these predictions
    (outcomes drawn from ``p``): the noise floor an observed ECE must clear."""
    p = np.asarray(p, dtype="float64")
    if not len(p) or draws < 1:
        return math.nan
    rng = np.random.default_rng(seed)
    values = [expected_calibration_error(rng.random(len(p)) < p, p, n_bins) for _ in range(draws)]
    return float(np.quantile(values, quantile))





# ---------------------------------------------------------------------------
# Population stability
# ---------------------------------------------------------------------------

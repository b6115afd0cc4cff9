"""Calibration folds: leadscore's grouped stratified folds against scikit-learn's
StratifiedGroupKFold on the same rows (one calibration fit's worth), with fold balance.

    .venv/bin/python benchmarks/bench_folds.py
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from leadscore.modeling.calibration import grouped_stratified_folds


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'rows':>8} {'leads':>7} {'sklearn s':>10} {'ours s':>8} {'ratio':>7}  positives per test fold (ours / sklearn)")
    for n, leads in [(9_000, 9_000), (60_000, 15_000), (200_000, 40_000)]:
        groups = np.arange(n) if leads == n else rng.integers(0, leads, n)
        y = (rng.random(n) < 0.05).astype(int)
        t = time.perf_counter()
        ref = list(StratifiedGroupKFold(n_splits=5).split(np.zeros(n), y, groups))
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        ours = grouped_stratified_folds(y, groups, 5)
        t_ours = time.perf_counter() - t
        print(f"{n:>8,} {leads:>7,} {t_ref:>10.2f} {t_ours:>8.3f} {t_ref / t_ours:>6.0f}x  "
              f"{[int(y[te].sum()) for _, te in ours]} / {[int(y[te].sum()) for _, te in ref]}")


if __name__ == "__main__":
    main()

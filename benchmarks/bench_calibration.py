"""How well calibrated is the shipped model on the weeks after its cut-off - calibrated out of
fold (what leadscore does) against a held-out share of leads, and not at all?

At each cut-off, the same LightGBM (the trees early stopping chose, then fitted on every lead
but the ones held out) is fitted on what was known then and its probabilities are read on the matured examples of the next 12 weeks:

* ``out of fold``: :func:`leadscore.training.pipeline._fit_at` - the fit's newest 8 weeks calibrate it,
  each example scored by a model fitted on the other half of the leads;
* ``held-out 15 %``: 15 % of the leads of the newest 8 weeks left out of the fit and calibrated
  on (the first walk-forward design);
* ``uncalibrated``: LightGBM's own probabilities, fitted on every lead.

Prints, per cut-off and on average: mean predicted / realized rate, log loss and ECE.

    python benchmarks/bench_calibration.py --data DIR [--cutoffs 2024-11-01 2025-01-01 ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from leadscore.features.builder import connect, feature_catalogue
from leadscore.labels.examples import (
    LABEL_SPECS,
    build_examples,
    lead_parts,
    matured,
)
from leadscore.modeling.baseline import load_rules
from leadscore.modeling.metrics import expected_calibration_error
from leadscore.modeling.model import calibrate, fit_lightgbm
from leadscore.training.config import load_pipeline
from leadscore.training.pipeline import _fit_at

REPO = Path(__file__).resolve().parents[1]
SQL = LABEL_SPECS["became_sql"]


def figures(name: str, p: np.ndarray, test: pd.DataFrame) -> dict:
    y = test[SQL.name].astype(int).to_numpy()
    return {"method": name, "predicted / realized": p.mean() / y.mean(),
            "log loss": log_loss(y, np.clip(p, 1e-6, 1 - 1e-6)), "ECE": expected_calibration_error(y, p)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="contract tables (leads, activities, lifecycle)")
    ap.add_argument("--config", type=Path, default=REPO / "pipelines/train.yaml")
    ap.add_argument("--cutoffs", nargs="+", default=["2024-11-01", "2025-01-01", "2025-03-01", "2025-05-01"])
    args = ap.parse_args()
    cfg = load_pipeline(args.config)
    con = connect({n: str(args.data / f"{n}.parquet") for n in ("leads", "activities", "lifecycle")})
    examples, _ = build_examples(con, cfg.examples, cfg.features, rules=load_rules(cfg.resolve(cfg.rules)))
    rows = matured(examples, SQL.name)
    catalogue = feature_catalogue(cfg.features)
    features = catalogue["name"].tolist()
    categorical = catalogue.loc[catalogue["kind"] == "categorical", "name"].tolist()
    sp = cfg.split
    results = []
    for cut in (pd.Timestamp(c, tz="UTC") for c in args.cutoffs):
        test = rows[(rows["as_of"] >= cut) & (rows["as_of"] < cut + pd.Timedelta(weeks=12))]
        trees = _fit_at(SQL, rows, cut, cfg, features, categorical)[0].best_iteration  # early stopping chooses
        shipped, parts, _, _ = _fit_at(SQL, rows, cut, cfg, features, categorical, trees=trees)
        # held-out share: 15 % of the newest weeks' leads out of the fit, calibrating it
        known = pd.concat([parts.fit, parts.promotion])
        newest = (known["as_of"] > parts.holdout_from).to_numpy()
        held = newest & (lead_parts(known["lead_id"], (0.15, 0.85), salt=sp.salt + 1) == 0)
        held_model = fit_lightgbm(known[~held], SQL.name, features, categorical, cfg.model, trees=trees)
        held_model = calibrate(held_model, known[held], cfg.calibration)
        raw = fit_lightgbm(known, SQL.name, features, categorical, cfg.model, trees=trees)
        margin = raw.margin(test)
        for name, p in (("out of fold", shipped.predict_proba(test)),
                        ("held-out 15 %", held_model.predict_proba(test)),
                        ("uncalibrated", 1 / (1 + np.exp(-margin)))):
            results.append({"cut-off": f"{cut:%Y-%m-%d}", **figures(name, p, test),
                            "calibration positives": int(parts.calibration[SQL.name].sum()) if name == "out of fold"
                            else int(known.loc[held, SQL.name].sum()) if name == "held-out 15 %" else np.nan})
        print(pd.DataFrame(results[-3:]).to_string(index=False), flush=True)
    table = pd.DataFrame(results)
    table["|log ratio|"] = np.log(table["predicted / realized"]).abs()
    print("\nmean over the cut-offs (|log ratio|: how far the mean prediction is from the realized rate):")
    print(table.groupby("method")[["|log ratio|", "log loss", "ECE"]].mean().to_string(float_format="%.4f"))


if __name__ == "__main__":
    main()

"""Does refitting on the newest matured outcomes pay? A drifting synthetic world says.

Generates (once) a synthetic CRM whose channels change what their leads are worth halfway
through the history (`leadscore synth --drift`), runs the training pipeline (the walk-forward
backtest, then the shipped model fitted on the newest matured outcomes), and compares on the
shipped model's promotion slice - held-out leads of the newest matured weeks, which no fit
below has seen:

* the shipped model (fitted up to the newest matured outcomes, every lead);
* the *train-slice* model: what the pipeline shipped before the walk-forward backtest - fitted
  on its training slice only: 60 % of the leads, label windows closed 259 days before the end
  of the outcomes (the old `calibration_start: 2025-01-15` on data ending 2025-10-01);
* the same procedure as the shipped model at the backtest's oldest fold cut-off (all leads,
  some months older);
* the rule baseline and the oracle.

With `--no-drift` the same on a world without drift, for contrast. Prints ROC AUC and log loss.

    python benchmarks/bench_backtest.py [--leads 30000] [--seed 7] [--data DIR] [--no-drift]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from leadscore.features.builder import connect
from leadscore.labels.examples import build_examples, lead_parts, matured
from leadscore.synthetic import SynthConfig, generate
from leadscore.synthetic.truth import load_latent, true_probabilities
from leadscore.training.config import load_pipeline
from leadscore.training.pipeline import _fit_at, train_pipeline

REPO = Path(__file__).resolve().parents[1]
SQL = "became_sql"
OLD_CALIBRATION_GAP_DAYS = (pd.Timestamp("2025-10-01") - pd.Timestamp("2025-01-15")).days  # 259


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leads", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--no-drift", dest="drift", action="store_false")
    ap.add_argument("--config", type=Path, default=REPO / "pipelines/train.yaml")
    args = ap.parse_args()
    data = args.data or REPO / f"data/synthetic/{'drift' if args.drift else 'nodrift'}-{args.leads}-{args.seed}"
    if not (data / "latent_leads.parquet").exists():
        print(f"generating {args.leads:,} leads (seed {args.seed}, drift {args.drift}) into {data}", flush=True)
        generate(SynthConfig(n_leads=args.leads, seed=args.seed, drift=args.drift), data, progress=False)

    t0 = time.perf_counter()
    cfg = load_pipeline(args.config)
    con = connect({n: str(data / f"{n}.parquet") for n in ("leads", "activities", "lifecycle")})
    run = train_pipeline(cfg, con, data_dir=data, echo=lambda s: None)
    primary = run.labels[SQL]
    promo = run.promotion
    if promo[SQL].nunique() < 2:
        raise SystemExit("the promotion slice has no positives; use more leads")
    catalogue = run.scorer.catalogue
    features = catalogue["name"].tolist()
    categorical = catalogue.loc[catalogue["kind"] == "categorical", "name"].tolist()
    oldest = primary.folds[0].fold.cutoff
    rows = promo.copy()
    examples, _ = build_examples(con, cfg.examples, run.scorer.feature_config, rules=run.scorer.rules)
    known = matured(examples, SQL)
    stale, stale_parts, _, _ = _fit_at(run.primary, known, oldest, cfg, features, categorical)
    old_cut = pd.Timestamp(run.params["observed_until"]) - pd.Timedelta(days=OLD_CALIBRATION_GAP_DAYS)
    old_train = known[lead_parts(known["lead_id"], (0.6, 0.2, 0.2)) == 0]
    old, old_parts, _, _ = _fit_at(run.primary, old_train, old_cut, cfg, features, categorical)
    truth = pd.concat([true_probabilities(load_latent(data), a, cfg.examples.horizon_days,
                                          cfg.examples.won_horizon_days) for a in sorted(rows["as_of"].unique())])
    rows = rows.merge(truth[["lead_id", "as_of", "p_sql"]], on=["lead_id", "as_of"], how="left")
    y = rows[SQL].astype(int).to_numpy()
    p = {"shipped model (newest matured outcomes)": run.scorer.primary_model.predict_proba(rows),
         f"train-slice model (as of {old_cut:%Y-%m-%d}, 60 % of leads)": old.predict_proba(rows),
         f"all leads, oldest fold cut-off ({oldest:%Y-%m-%d})": stale.predict_proba(rows),
         "rule baseline (points)": None, "oracle": rows["p_sql"].to_numpy()}
    print(f"{data.name}: {len(rows):,} held-out examples as of {rows['as_of'].min():%Y-%m-%d} .. "
          f"{rows['as_of'].max():%Y-%m-%d} ({int(y.sum()):,} positive); shipped model fitted on as-of dates "
          f"{run.params['train_from']} .. {run.params['train_until']}, train-slice model on "
          f"{old_parts.fit['as_of'].min():%Y-%m-%d} .. {old_parts.fit['as_of'].max():%Y-%m-%d}, oldest-fold model "
          f"on {stale_parts.fit['as_of'].min():%Y-%m-%d} .. {stale_parts.fit['as_of'].max():%Y-%m-%d}; "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"  {'':55s} {'AUC':>7s} {'log loss':>9s}")
    for name, prob in p.items():
        if prob is None:
            auc, ll = roc_auc_score(y, rows["baseline_points"]), float("nan")
        else:
            auc, ll = roc_auc_score(y, prob), log_loss(y, np.clip(prob, 1e-6, 1 - 1e-6))
        print(f"  {name:55s} {auc:7.4f} {ll:9.5f}")
    print("  backtest of the shipped procedure (AUC per fold): "
          + ", ".join(f"{f.fold.cutoff:%Y-%m-%d} {f.comparison.loc['model', 'auc']:.4f}" for f in primary.folds))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

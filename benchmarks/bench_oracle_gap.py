"""Where the model's distance to the oracle comes from, on synthetic data.

The oracle knows what the CRM does not record: each lead's hidden journey stage at as_of
(awareness, consideration, decision, cold) and its latent fit and intent. This script trains
the pipeline's LightGBM (same examples, same parameters as `leadscore train`, fitted as the
newest backtest fold is - on what was known at its cut-off - and tested on the weeks after it)
on the features alone and again with that hidden information added as extra columns, and
prints the test-slice ROC AUC of each next to the rule baseline and the oracle. The rows with hidden columns are not achievable models: they bound what better
features could ever recover, and so how far above the rule baseline any model can get in this
synthetic world.

    python benchmarks/bench_oracle_gap.py [--data DIR] [--leads 50000] [--seed 7]
                                          [--config pipelines/train.yaml]

If --data does not exist it is generated first (`leadscore synth --leads N --seed S`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadscore.features.builder import connect, feature_catalogue
from leadscore.labels.examples import (
    build_examples,
    matured,
    observed_end,
    parts_at,
    walk_forward,
)
from leadscore.modeling.baseline import load_rules
from leadscore.modeling.model import fit_lightgbm
from leadscore.synthetic import SynthConfig, generate
from leadscore.synthetic.truth import load_latent, true_probabilities
from leadscore.training.config import load_pipeline

REPO = Path(__file__).resolve().parents[1]
SQL = "became_sql"
HIDDEN = {  # label -> (extra columns, of which categorical)
    "model (features only)": ([], []),
    "+ hidden stage": (["latent_stage"], ["latent_stage"]),
    "+ latent fit, intent": (["fit", "intent"], []),
    "+ stage, fit, intent": (["latent_stage", "fit", "intent"], ["latent_stage"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "data/synthetic/oracle-gap")
    ap.add_argument("--leads", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--config", type=Path, default=REPO / "pipelines/train.yaml")
    args = ap.parse_args()
    if not (args.data / "latent_leads.parquet").exists():
        print(f"generating {args.leads:,} leads (seed {args.seed}) into {args.data}", flush=True)
        generate(SynthConfig(n_leads=args.leads, seed=args.seed), args.data, progress=False)

    t0 = time.perf_counter()
    cfg = load_pipeline(args.config)
    con = connect({n: str(args.data / f"{n}.parquet") for n in ("leads", "activities", "lifecycle")})
    examples, _ = build_examples(con, cfg.examples, cfg.features, rules=load_rules(cfg.resolve(cfg.rules)))
    examples = matured(examples, SQL)
    sp, h = cfg.split, cfg.examples.horizon_days
    newest = walk_forward(examples["as_of"], h, observed_end(con, cfg.examples), sp.folds, sp.test_weeks,
                          sp.step_weeks, cfg.examples.cadence_days, sp.cutoffs)[-1]
    train = parts_at(examples, SQL, newest.cutoff, h, sp.holdout_weeks, sp.promotion_fraction, sp.salt).fit
    test = examples[examples["as_of"].isin(newest.test_dates)].reset_index(drop=True)

    latent = load_latent(args.data)
    hidden = pd.concat([true_probabilities(latent, a, cfg.examples.horizon_days, cfg.examples.won_horizon_days)
                        for a in sorted(pd.concat([train["as_of"], test["as_of"]]).unique())])
    hidden = hidden.merge(latent["latent_leads"][["lead_id", "fit", "intent"]], on="lead_id", validate="many_to_one")
    hidden["latent_stage"] = pd.Categorical(hidden["latent_stage"])
    train, test = (p.merge(hidden, on=["lead_id", "as_of"], how="left", validate="one_to_one") for p in (train, test))
    if test["p_sql"].isna().any() or train["p_sql"].isna().any():
        raise SystemExit("the generator's truth lacks some example rows; is --data synthetic and complete?")
    print(f"{len(train):,} training and {len(test):,} test examples ({int(test[SQL].sum()):,} test positives), "
          f"built in {time.perf_counter() - t0:.0f} s", flush=True)

    catalogue = feature_catalogue(cfg.features)
    features = catalogue["name"].tolist()
    categorical = catalogue.loc[catalogue["kind"] == "categorical", "name"].tolist()
    y = test[SQL].astype(int).to_numpy()
    auc = {"oracle (true p_sql)": roc_auc_score(y, test["p_sql"]),
           "rule baseline (points)": roc_auc_score(y, test["baseline_points"])}
    for label, (extra, extra_cat) in HIDDEN.items():
        model = fit_lightgbm(train, SQL, features + extra, categorical + extra_cat, cfg.model)
        auc[label] = roc_auc_score(y, model.margin(test))
        print(f"  trained {label}", flush=True)

    base = auc["rule baseline (points)"]
    print(f"\ntest-slice ROC AUC, became_sql within {cfg.examples.horizon_days} days ({args.data}):")
    print(f"  {'':28s} {'AUC':>7s} {'- baseline':>11s} {'/ oracle':>9s}")
    for label, value in auc.items():
        print(f"  {label:28s} {value:7.4f} {value - base:+11.4f} {value / auc['oracle (true p_sql)']:9.3f}")
    print("\nby hidden stage at as_of (test slice): examples, positives, oracle AUC within the stage")
    for stage, part in test.groupby("latent_stage", observed=True):
        yy = part[SQL].astype(int)
        within = f"{roc_auc_score(yy, part['p_sql']):.3f}" if yy.nunique() > 1 else "-"
        print(f"  {stage:14s} {len(part):9,} {int(yy.sum()):7,} {within:>7s}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

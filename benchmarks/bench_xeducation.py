"""Benchmark leadscore's model on the X Education flat export against a default LightGBM and the
logistic regression, by stratified k-fold cross-validation on the same folds and columns.

Goal: leadscore's model (LightGBM early-stopped on held-out training rows, then calibrated on
them) has a higher mean ROC AUC over the folds than both a plain `LGBMClassifier()` with default
parameters and the one-hot logistic regression. The columns are those the dataset config keeps
(excluded columns - filled in by sales after contact - are not used by any model).

    python benchmarks/bench_xeducation.py [--config pipelines/xeducation.yaml] [--data Leads.csv]
                                          [--folds 5] [--seed 0] [--model-param key=value ...]
                                          [--check]

Model parameters (leadscore.train.ModelConfig fields) come from the config's `model:` section if
it has one, then from --model-param (which wins); anything not given keeps ModelConfig's default.
--seed shuffles the folds; the models' own seed is the `seed` model parameter (default 0).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LABELS = {"model": "leadscore model", "lgbm_default": "default LGBM", "logreg": "logistic"}
ROWS = (("auc", "AUC", 4), ("pr_auc", "PR AUC", 4), ("logloss", "log loss", 4), ("brier", "Brier", 4),
        ("ece", "ECE", 4), ("lift_top_decile", "lift top decile", 2), ("capture_top_decile", "capture top decile", 3))


def parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"error: --model-param expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def fmt(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "pipelines" / "xeducation.yaml",
                    help="flat-export dataset config (default: pipelines/xeducation.yaml)")
    ap.add_argument("--data", type=Path, default=None, help="the CSV export (default: the config's path)")
    ap.add_argument("--folds", type=int, default=5, help="number of stratified folds (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    ap.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                    help="a ModelConfig field, e.g. min_child_samples=50; repeatable; overrides the config's "
                         "model: section")
    ap.add_argument("--check", action="store_true",
                    help="exit with status 1 if leadscore's model does not beat both references on mean AUC")
    args = ap.parse_args()

    from leadscore.config import ConfigError, build
    from leadscore.flat import load_config, load_flat
    from leadscore.flatcv import MODELS, cross_validate_flat
    from leadscore.train import ModelConfig

    try:
        dataset = load_config(args.config)
        section = dict(dataset.model)
        cli = parse_params(args.model_param)
        config = build(ModelConfig, {**section, **cli}, f"{args.config} model: + --model-param")
        data = load_flat(dataset, args.data)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None

    kinds = data.catalogue["kind"].value_counts()
    given = {**section, **cli}
    source = ", ".join(f"{k}={v}" for k, v in given.items()) if given else "none (ModelConfig defaults)"
    print(f"{dataset.dataset}: {len(data.features):,} leads, {data.y.mean():.1%} positive; "
          f"{data.features.shape[1]} columns ({kinds.get('categorical', 0)} categorical, "
          f"{kinds.get('numeric', 0)} numeric), {len(data.excluded)} excluded by the config")
    print(f"model parameters given: {source}")
    print(f"  in effect: learning_rate={config.learning_rate}, num_leaves={config.num_leaves}, "
          f"min_child_samples={config.min_child_samples}, subsample={config.subsample}, "
          f"colsample_bytree={config.colsample_bytree}, reg_lambda={config.reg_lambda}, "
          f"early_stopping_rounds={config.early_stopping_rounds}, validation_fraction={config.validation_fraction}, "
          f"seed={config.seed}")
    print(f"{args.folds}-fold stratified cross-validation, fold seed {args.seed}; load average before "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    t0 = time.perf_counter()
    result = cross_validate_flat(data, config, n_splits=args.folds, seed=args.seed,
                                 progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0

    s = result.summary
    width = 19
    print(f"\nmean ± std over {args.folds} folds ({wall:.1f} s)")
    print(f"  {'':20}" + "".join(f"{LABELS[m]:>{width}}" for m in MODELS))
    for key, label, digits in ROWS:
        print(f"  {label:20}" + "".join(f"{fmt(s.loc[m, (key, 'mean')], s.loc[m, (key, 'std')], digits):>{width}}"
                                        for m in MODELS))

    auc = result.folds.pivot(index="fold", columns="model", values="auc")[list(MODELS)]
    print("\nAUC per fold")
    print(f"  {'fold':>4}" + "".join(f"{LABELS[m]:>17}" for m in MODELS)
          + f"{'- default LGBM':>16}{'- logistic':>12}")
    for k, row in auc.iterrows():
        print(f"  {k + 1:>4}" + "".join(f"{row[m]:17.4f}" for m in MODELS)
              + f"{row['model'] - row['lgbm_default']:+16.4f}{row['model'] - row['logreg']:+12.4f}")
    diff_lgbm, diff_log = auc["model"] - auc["lgbm_default"], auc["model"] - auc["logreg"]
    print(f"  {'mean':>4}" + "".join(f"{auc[m].mean():17.4f}" for m in MODELS)
          + f"{diff_lgbm.mean():+16.4f}{diff_log.mean():+12.4f}")
    print(f"  folds where leadscore's model is ahead: {int((diff_lgbm > 0).sum())}/{len(auc)} vs default LGBM, "
          f"{int((diff_log > 0).sum())}/{len(auc)} vs logistic")

    means = auc.mean()
    beats = means["model"] > means["lgbm_default"] and means["model"] > means["logreg"]
    ok = all(math.isfinite(v) for v in result.folds.drop(columns=["fold", "model"]).to_numpy().ravel())
    print(f"\nleadscore's model beats both on mean AUC: {'YES' if beats else 'NO'} "
          f"(model {means['model']:.4f}, default LGBM {means['lgbm_default']:.4f}, logistic {means['logreg']:.4f})")
    if not ok:
        print("ERROR: some metric is not finite", file=sys.stderr)
    if not ok or (args.check and not beats):
        sys.exit(1)


if __name__ == "__main__":
    main()

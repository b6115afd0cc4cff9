"""Benchmark leadscore's model on the X Education flat export against a default LightGBM and the
logistic regression, by stratified k-fold cross-validation on the same folds and columns.

Goal (issue 20): leadscore's model - the candidate (LightGBM shapes, a spline logistic
regression, their blend) with the lowest mean log loss over the folds - has a higher mean ROC
AUC than both a plain `LGBMClassifier()` with default parameters and the plain one-hot logistic
regression, on every fold seed; every candidate's AUC, log loss and ECE is printed. The columns
are those the dataset config keeps (excluded columns - filled in by sales after contact - are
not used by any model).

    python benchmarks/bench_xeducation.py [--config pipelines/xeducation.yaml] [--data Leads.csv]
                                          [--folds 5] [--seeds 0 1 2] [--model-param key=value ...]
                                          [--check]

Model parameters (leadscore.modeling.model.ModelConfig fields) come from the config's `model:` section if
it has one, then from --model-param (which wins); anything not given keeps ModelConfig's default.
--seeds shuffle the folds (one cross-validation per seed); the models' own seed is the `seed`
model parameter (default 0).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds of the fold assignment, one cross-validation each (default 0 1 2)")
    ap.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                    help="a ModelConfig field, e.g. min_child_samples=50; repeatable; overrides the config's "
                         "model: section")
    ap.add_argument("--check", action="store_true",
                    help="exit with status 1 if leadscore's model does not beat both references on mean AUC "
                         "on every seed")
    args = ap.parse_args()

    from leadscore.modeling.model import ModelConfig
    from leadscore.settings import ConfigError, build
    from leadscore.training.flat import load_config, load_flat

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
    verdicts, summary = [], []
    for seed in args.seeds:
        ok, beats, row = run_seed(data, config, args.folds, seed)
        verdicts.append(ok and (beats or not args.check))
        summary.append(row)
    print(f"\nover the seeds {args.seeds}: mean AUC per seed")
    print(f"  {'seed':>4} {'chosen':>28} {'model':>8} {'default LGBM':>13} {'logistic':>9} {'ahead of both':>14}")
    for r in summary:
        print(f"  {r['seed']:>4} {r['winner']:>28} {r['model']:8.4f} {r['lgbm_default']:13.4f} {r['logreg']:9.4f} "
              f"{'YES' if r['beats'] else 'NO':>14}")
    print(f"  mean {'':>28} {np.mean([r['model'] for r in summary]):8.4f} "
          f"{np.mean([r['lgbm_default'] for r in summary]):13.4f} {np.mean([r['logreg'] for r in summary]):9.4f}")
    if not all(verdicts):
        sys.exit(1)


def run_seed(data, config, folds: int, seed: int) -> tuple[bool, bool, dict]:
    from leadscore.training.flatcv import MODELS, cross_validate_flat

    print(f"\n=== {folds}-fold stratified cross-validation, fold seed {seed}; load average before "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    result = cross_validate_flat(data, config, n_splits=folds, seed=seed,
                                 progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0

    s = result.summary
    width = 19
    print(f"mean ± std over {folds} folds ({wall:.1f} s); leadscore's model is the candidate {result.winner}")
    print(f"  {'':20}" + "".join(f"{LABELS[m]:>{width}}" for m in MODELS))
    for key, label, digits in ROWS:
        print(f"  {label:20}" + "".join(f"{fmt(s.loc[m, (key, 'mean')], s.loc[m, (key, 'std')], digits):>{width}}"
                                        for m in MODELS))
    print("\ncandidates (mean over the folds; the lowest log loss wins, a simpler one within "
          f"{config.selection_tolerance:.1%} instead)")
    for r in result.candidates.itertuples():
        seconds = np.mean([f[r.candidate].seconds for f in result.fold_entrants if r.candidate in f])
        print(f"  {'*' if r.chosen else ' '} {r.candidate:28} AUC {r.auc:.4f}  log loss {r.logloss:.4f}  ECE {r.ece:.4f}"
              f"  fit {seconds:.1f} s per fold")

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
    print(f"leadscore's model beats both on mean AUC: {'YES' if beats else 'NO'} "
          f"(model {means['model']:.4f}, default LGBM {means['lgbm_default']:.4f}, logistic {means['logreg']:.4f})")
    if not ok:
        print("ERROR: some metric is not finite", file=sys.stderr)
    return ok, beats, {"seed": seed, "winner": result.winner, "beats": beats, **means.to_dict()}


if __name__ == "__main__":
    main()

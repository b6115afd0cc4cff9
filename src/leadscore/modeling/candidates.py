"""Candidate models per label, raced on the same folds; the winner by log loss becomes the model.

**The candidates** (:func:`candidates_for`), each fitted and calibrated exactly as a shipped
model is (out of fold on the calibration rows):

* LightGBM, a compact fixed grid (``model.search_trials`` of :data:`GRID`: the configured
  parameters first, then a larger and a smaller, more regularised tree shape). Below
  ``model.small_data_positives`` positives in the fit the grid is :data:`SMALL_GRID` instead:
  fewer leaves, small leaves allowed but strong L2 and categorical smoothing - what a few
  hundred outcomes can support;
* ``logistic`` - :class:`leadscore.modeling.families.LinearMargin`: one-hot levels with rare
  ones pooled, linear splines of the signed log of numbers with missing flags, ``C`` by inner
  cross-validation grouped by lead; fitted on every positive and a weighted sample of at most
  :data:`LINEAR_ROWS` examples;
* ``blend`` - the logistic regression and the LightGBM candidate with the lowest out-of-fold
  log loss on the calibration rows, margins summed with the weight (0.25 / 0.5 / 0.75) that
  calibrates best there, then calibrated like the others.

**The choice** (:func:`choose`): the candidate with the lowest mean log loss over the evaluation
folds (walk-forward for event data and dated exports, k-fold for undated ones); a simpler one
within ``model.selection_tolerance`` (relative) of it wins instead (logistic < LightGBM <
blend). Choosing among a handful of candidates on the folds that also report them is a mild
optimism; the references beside them were not chosen and carry none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from leadscore.labels.examples import weights_of
from leadscore.modeling.calibration import MarginCalibrator
from leadscore.modeling.families import BlendMargin, LinearMargin
from leadscore.modeling.model import (
    WEIGHT,
    ConversionModel,
    InsufficientData,
    ModelConfig,
    as_model_frame,
    calibrate,
    categorical_levels,
    cross_fitted,
    fit_lightgbm,
    informative_features,
    sample_negatives,
)

GRID = ({}, {"num_leaves": 31, "min_child_samples": 50, "reg_lambda": 1.0},
        {"num_leaves": 7, "min_child_samples": 20, "reg_lambda": 10.0})
SMALL_GRID = ({"num_leaves": 4, "min_child_samples": 50, "reg_lambda": 20.0},
              {"num_leaves": 7, "min_child_samples": 20, "reg_lambda": 10.0, "min_data_per_group": 20, "cat_smooth": 20.0},
              {"num_leaves": 15, "min_child_samples": 100, "reg_lambda": 10.0})
LINEAR_ROWS = 50_000
BLEND_WEIGHTS = (0.25, 0.5, 0.75)   # the trees' share of a blend's margin
SIMPLICITY = {"logistic": 0, "lightgbm": 1, "blend": 2}


@dataclass(frozen=True)
class Candidate:
    """A model to race: ``family`` lightgbm (``params``: ModelConfig fields it overrides),
    logistic or blend."""

    name: str
    family: str
    params: dict = field(default_factory=dict)


def lightgbm_candidate(config: ModelConfig, params: dict) -> Candidate:
    c = config.replace(**params)
    return Candidate(f"lightgbm_l{c.num_leaves}_m{c.min_child_samples}_r{c.reg_lambda:g}", "lightgbm", dict(params))


def small_data(positives: int, config: ModelConfig) -> bool:
    return positives < config.small_data_positives


def candidates_for(config: ModelConfig, positives: int) -> list[Candidate]:
    """The race for a fit with ``positives`` positive outcomes (see the module docstring)."""
    grid = SMALL_GRID if small_data(positives, config) else GRID
    out = [lightgbm_candidate(config, p) for p in grid[:config.search_trials]]
    families = set(config.candidates)
    if "lightgbm" not in families:
        out = []
    if "logistic" in families:
        out.append(Candidate("logistic", "logistic"))
    if "blend" in families and out and "logistic" in families:
        out.append(Candidate("blend", "blend"))
    return out


def fit_linear(train: pd.DataFrame, label: str, features: list[str], categorical: list[str], config: ModelConfig,
               C: float | None = None) -> ConversionModel:
    """The logistic candidate on ``train``: the same features and levels as LightGBM would use
    (constant ones left out, the training levels), fitted on every positive and a weighted
    sample of negatives up to :data:`LINEAR_ROWS` (``max_fit_rows`` when smaller); ``C`` by inner CV grouped by lead unless given."""
    y_all = train[label].astype(bool).to_numpy()
    if y_all.sum() < config.min_positives:
        raise InsufficientData(f"{label}: only {int(y_all.sum())} positive outcomes in the training part "
                               f"({len(train):,} examples); at least {config.min_positives} are needed to learn a "
                               "model (model.min_positives)")
    features, constant = informative_features(train, features)
    categorical = [c for c in categorical if c in features]
    levels = categorical_levels(train, categorical, config.rare_level_rows)
    sample, rate = sample_negatives(train, label, min(LINEAR_ROWS, config.max_fit_rows or LINEAR_ROWS), config.seed)
    X = as_model_frame(sample, features, levels)
    core = LinearMargin(C=C, seed=config.seed).fit(
        X, sample[label].astype(bool).to_numpy(), sample_weight=sample[WEIGHT].to_numpy(),
        groups=sample["lead_id"].to_numpy() if "lead_id" in sample else None)
    return ConversionModel(label=label, features=features, levels=levels, core=core,
                           info={"train_rows": len(sample), "train_positives": int(sample[label].sum()),
                                 "C": core.C_, "constant_features": constant, "negative_sampling_rate": rate})


def fit_member(candidate: Candidate, train: pd.DataFrame, label: str, features: list[str], categorical: list[str],
               config: ModelConfig, trees: int | None = None, C: float | None = None) -> ConversionModel:
    """An uncalibrated LightGBM or logistic candidate fitted on ``train`` (``trees`` / ``C``
    fixed beforehand, or chosen on the training leads)."""
    if candidate.family == "lightgbm":
        return fit_lightgbm(train, label, features, categorical, config.replace(**candidate.params), trees=trees)
    if candidate.family == "logistic":
        return fit_linear(train, label, features, categorical, config, C=C)
    raise ValueError(f"{candidate.name}: a {candidate.family} is built from members, not fitted")


@dataclass
class Entrant:
    """A candidate fitted and calibrated: ``calibration_p`` / ``calibration_margin`` are the
    calibration rows' out-of-fold probability and margin; ``seconds`` its fitting time."""

    candidate: Candidate
    model: ConversionModel
    calibration_p: np.ndarray
    calibration_margin: np.ndarray
    seconds: float
    partner: str | None = None    # a blend: the LightGBM candidate in it

    @property
    def calibration_logloss(self) -> float:
        return float(self.model.info["calibration_oof_logloss"])


def _calibrated(model: ConversionModel, cal: pd.DataFrame, margin: np.ndarray, method: str) -> np.ndarray:
    model = calibrate(model, cal, method, margin=margin)
    p = model.calibrator.predict(margin)
    model.info["calibration_oof_logloss"] = float(log_loss(cal[model.label].astype(int), p, labels=[0, 1],
                                                           sample_weight=weights_of(cal)))
    return p


def blend_weight(tree_margin: np.ndarray, linear_margin: np.ndarray, y: np.ndarray,
                 sample_weight: np.ndarray | None = None) -> float:
    """The trees' share in :data:`BLEND_WEIGHTS` whose blended margin a sigmoid calibrates best."""
    def loss(w: float) -> float:
        m = w * tree_margin + (1 - w) * linear_margin
        cal = MarginCalibrator(method="sigmoid").fit(m, y, sample_weight=sample_weight)
        return float(log_loss(y, cal.predict(m), labels=[0, 1], sample_weight=sample_weight))

    return min(BLEND_WEIGHTS, key=loss)


def fit_entrants(candidates: list[Candidate], train: pd.DataFrame, cal: pd.DataFrame, label: str,
                 features: list[str], categorical: list[str], config: ModelConfig, method: str = "auto",
                 fixed: dict[str, dict] | None = None, say: Callable[[str], None] | None = None) -> dict[str, Entrant]:
    """Every candidate fitted on ``train`` and calibrated on ``cal`` out of fold (each ``cal``
    lead's margin comes from a fit without it: :func:`leadscore.modeling.model.cross_fitted`).
    ``fixed``: per candidate name, ``trees`` / ``C`` chosen beforehand, or for the blend its
    ``partner``. Raises InsufficientData when no candidate can be fitted."""
    fixed = fixed or {}
    out: dict[str, Entrant] = {}
    y_cal = cal[label].astype(int).to_numpy()
    for cand in (c for c in candidates if c.family != "blend"):
        t0 = time.perf_counter()
        model = fit_member(cand, train, label, features, categorical, config, **fixed.get(cand.name, {}))
        settle = {"trees": model.best_iteration} if cand.family == "lightgbm" else {"C": model.info["C"]}
        half = config.replace(min_positives=1)  # the whole fit was checked for enough positives
        margin = cross_fitted(train, cal, lambda rows, c=cand, s=settle: fit_member(
            c, rows, label, model.features, categorical, half, **s), config.seed)
        p = _calibrated(model, cal, margin, method)
        out[cand.name] = Entrant(cand, model, p, margin, time.perf_counter() - t0)
    for cand in (c for c in candidates if c.family == "blend"):
        trees = [e for e in out.values() if e.candidate.family == "lightgbm"]
        linear = next((e for e in out.values() if e.candidate.family == "logistic"), None)
        if not trees or linear is None:
            continue
        want = fixed.get(cand.name, {}).get("partner")
        tree = out[want] if want in out else min(trees, key=lambda e: e.calibration_logloss)
        t0 = time.perf_counter()
        w = blend_weight(tree.calibration_margin, linear.calibration_margin, y_cal, weights_of(cal))
        core = BlendMargin([(w, tree.model.core), (1 - w, linear.model.core)])
        model = ConversionModel(label=label, features=tree.model.features, levels=tree.model.levels, core=core,
                                info={**tree.model.info, "C": linear.model.info["C"], "blend_weight": w,
                                      "blend_partner": tree.candidate.name})
        margin = w * tree.calibration_margin + (1 - w) * linear.calibration_margin
        p = _calibrated(model, cal, margin, method)
        out[cand.name] = Entrant(cand, model, p, margin, time.perf_counter() - t0 + tree.seconds + linear.seconds,
                                 partner=tree.candidate.name)
    if say is not None and out:
        say("    candidates (calibration rows, out of fold): " + "; ".join(
            f"{name} log loss {e.calibration_logloss:.4f} ({e.seconds:.0f} s)" for name, e in out.items()))
    return out


def choose(mean_logloss: pd.Series, candidates: list[Candidate], tolerance: float) -> str:
    """The candidate with the lowest mean log loss; a simpler one within ``tolerance``
    (relative) of it wins instead (logistic < LightGBM < blend; among LightGBM shapes, the
    earlier in the grid)."""
    known = [c for c in candidates if c.name in mean_logloss.index and np.isfinite(mean_logloss[c.name])]
    if not known:
        raise InsufficientData("no candidate model could be evaluated")
    best = min(mean_logloss[c.name] for c in known)
    tied = [c for c in known if mean_logloss[c.name] <= best * (1 + tolerance)]
    return min(tied, key=lambda c: (SIMPLICITY[c.family], candidates.index(c))).name


def ship_plan(winner: str, candidates: list[Candidate], fold_entrants: list[dict[str, Entrant]]) -> tuple[list[Candidate], dict]:
    """What to fit for the shipped model: the winner (a blend: its logistic member and its most
    often chosen LightGBM partner) with the trees the folds chose (their median)."""
    by_name = {c.name: c for c in candidates}
    chosen = by_name[winner]
    fixed: dict[str, dict] = {}
    if chosen.family == "blend":
        partners = Counter(f[winner].partner for f in fold_entrants if winner in f)
        partner = partners.most_common(1)[0][0]
        plan = [by_name[partner], by_name["logistic"], chosen]
        fixed[winner] = {"partner": partner}
    else:
        plan = [chosen]
    for cand in plan:
        if cand.family == "lightgbm":
            trees = [f[cand.name].model.best_iteration for f in fold_entrants if cand.name in f]
            if trees:
                fixed[cand.name] = {"trees": int(np.median(trees))}
    return plan, fixed


def candidate_table(folds: list[dict[str, dict]], candidates: list[Candidate], winner: str) -> pd.DataFrame:
    """candidate, family, folds, mean AUC / log loss / ECE over the folds, chosen - from
    per-fold {name: metrics} dicts."""
    rows = []
    for cand in candidates:
        per = [f[cand.name] for f in folds if cand.name in f]
        if not per:
            continue
        rows.append({"candidate": cand.name, "family": cand.family, "folds": len(per),
                     **{m: float(np.mean([p[m] for p in per])) for m in ("auc", "logloss", "ece")},
                     "chosen": "yes" if cand.name == winner else ""})
    return pd.DataFrame(rows)


def candidates_lines(table: pd.DataFrame) -> list[str]:
    """The candidate table as console lines, the chosen one marked."""
    return [f"  {'*' if r.chosen else ' '} {r.candidate:28} {r.family:9} AUC {r.auc:.4f}  log loss {r.logloss:.4f}  "
            f"ECE {r.ece:.4f}  ({r.folds} folds)" for r in table.itertuples()]

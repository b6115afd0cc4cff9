"""The rule-based points baseline: the lead scoring every CRM ships, kept next to the model.

Rules are data (:data:`DEFAULT_RULES`, ``leadscore/modeling/rules.yaml``, or a copy the config names): *fit* rules give points for who the lead is,
*engagement* rules give points per occurrence of an activity kind - optionally only inside a
time window, capped per rule, and decayed with a half-life so that old activity counts less.
Group caps, a total cap, MQL/SQL thresholds and a fit x engagement grid (A/B/C x 1/2/3) turn
the points into a tier. Scoring as of T reads only rows strictly before T, exactly like the
model's features, and reports the rules that fired: the baseline's own explanation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression

from leadscore.data.contract import (
    DEFAULT_CONTRACT,
    DEPARTMENTS,
    EMAIL_DOMAIN_TYPES,
    SENIORITY_LEVELS,
    Contract,
)
from leadscore.features.builder import (
    TableSource,
    _quote,
    _resolve_pairs,
    _with_as_of,
    attribute_sql,
    history_sql,
)
from leadscore.modeling.metrics import sample_weights
from leadscore.settings import (
    ConfigError,
    Positive,
    Section,
    build,
    load_yaml,
    yaml_lines,
)

FIT_ATTRIBUTES = {  # attribute -> vocabulary (None: open vocabulary)
    "seniority": SENIORITY_LEVELS,
    "department": DEPARTMENTS,
    "email_domain_type": EMAIL_DOMAIN_TYPES,
    "industry": None,
    "country": None,
    "lead_source": None,
    "job_title": None,
}
NUMERIC_ATTRIBUTES = ("company_size",)

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")  # the packaged rule set: a starting point to copy


@dataclass(frozen=True)
class FitRule:
    name: str
    attribute: str
    points: float
    values: tuple | None = None  # the attribute is one of these
    range: tuple[float, float] | None = None  # numeric attribute within [lo, hi]


@dataclass(frozen=True)
class EngagementRule:
    name: str
    activity: str
    points: float  # per occurrence (negative for unsubscribes, bounces ...)
    window_days: float | None = None  # only occurrences this recent count
    cap: float | None = None  # |rule points| never exceed this
    half_life_days: float | None = None  # decay; None = no decay


@dataclass(frozen=True)
class RuleSet:
    fit_rules: tuple[FitRule, ...]
    engagement_rules: tuple[EngagementRule, ...]
    fit_cap: float | None
    engagement_cap: float | None
    total_cap: float | None
    mql_threshold: float
    sql_threshold: float
    grid_fit: tuple[float, float]  # (A, B) lower bounds
    grid_engagement: tuple[float, float]  # (1, 2) lower bounds
    source: str = "<rules>"

    @property
    def rule_names(self) -> list[str]:
        return [r.name for r in self.fit_rules] + [r.name for r in self.engagement_rules]


# ---------------------------------------------------------------------------
# Reading and validating rule files
# ---------------------------------------------------------------------------

NonNegative = Annotated[float, Field(ge=0)]


class ColumnRuleSpec(Section):
    """A rule on an attribute (a flat export's column): ``values`` for a categorical one,
    ``range: [min, max]`` for a numeric one."""

    name: str | None = None
    attribute: str
    points: float
    values: Annotated[tuple[str | int | float | bool, ...], Field(min_length=1)] | None = None
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _ordered(self):
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range minimum {self.range[0]:g} is above maximum {self.range[1]:g}")
        return self


class ActivityRuleSpec(Section):
    """Points per occurrence of an activity kind, within ``window_days``, capped, decayed with
    ``half_life_days`` (not given: the engagement section's; null: no decay)."""

    name: str | None = None
    activity: str
    points: float
    window_days: NonNegative | None = None
    cap: NonNegative | None = None
    half_life_days: Positive | None = None


class FitRules(Section):
    cap: NonNegative | None = None
    rules: tuple[ColumnRuleSpec, ...] = ()


class EngagementRules(Section):
    cap: NonNegative | None = None
    half_life_days: Positive | None = None
    rules: tuple[ActivityRuleSpec, ...] = ()


class ColumnEngagementRules(Section):
    """A flat export's activity is already counted in its columns: column rules here too."""

    cap: NonNegative | None = None
    rules: tuple[ColumnRuleSpec, ...] = ()


class Thresholds(Section):
    mql: float
    sql: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.mql > self.sql:
            raise ValueError(f"the MQL threshold ({self.mql:g}) is above the SQL threshold ({self.sql:g})")
        return self


class FitGrid(Section):
    A: float = 40
    B: float = 20


class EngagementGrid(Section):
    one: float = Field(60, alias="1")
    two: float = Field(20, alias="2")

    @model_validator(mode="before")
    @classmethod
    def _text_keys(cls, data):   # YAML reads the keys 1 and 2 as numbers
        return {str(k): v for k, v in data.items()} if isinstance(data, dict) else data


class Grid(Section):
    fit: FitGrid = FitGrid()
    engagement: EngagementGrid = EngagementGrid()

    @model_validator(mode="after")
    def _ordered(self):
        if self.fit.A < self.fit.B or self.engagement.one < self.engagement.two:
            raise ValueError("the A (1) bound must not be below the B (2) bound")
        return self


class RulesFile(Section):
    """A rules YAML (``leadscore/modeling/rules.yaml`` is the packaged one)."""

    fit: FitRules
    engagement: EngagementRules
    thresholds: Thresholds
    total_cap: NonNegative | None = None
    grid: Grid = Grid()


class ColumnRulesFile(RulesFile):
    """A rules YAML for a flat export: every rule names a column."""

    engagement: ColumnEngagementRules


def parse_rules(raw: dict, source: str = "<rules>", lines: dict | None = None,
                contract: Contract = DEFAULT_CONTRACT, columns: Mapping[str, str] | None = None) -> RuleSet:
    """A RuleSet from parsed YAML; attributes and activity kinds are checked against
    ``contract`` (a source's declared attributes and kinds are allowed too). ``columns``
    (name -> categorical / numeric): a flat export's - then every rule, fit or engagement,
    names a column (``attribute:``) with ``values`` or a ``range``. ``lines``: the file's
    :func:`~leadscore.settings.yaml_lines`, for the line of each problem."""
    lines = lines or {}
    if columns is not None:
        categorical = {c: None for c, kind in columns.items() if kind == "categorical"}
        numeric = tuple(c for c, kind in columns.items() if kind != "categorical")
    else:
        categorical = {**FIT_ATTRIBUTES, **{a.name: None for a in contract.attributes if a.kind == "categorical"}}
        numeric = (*NUMERIC_ATTRIBUTES, *(a.name for a in contract.attributes if a.kind == "numeric"))

    def rule_name(loc: tuple) -> str:
        """``engagement rule 3 (Download): cap`` for ``("engagement", "rules", 2, "cap")``."""
        if len(loc) >= 3 and loc[0] in ("fit", "engagement") and loc[1] == "rules" and isinstance(loc[2], int):
            group = raw.get(loc[0])
            rules = group.get("rules") if isinstance(group, dict) else None
            rule = rules[loc[2]] if isinstance(rules, list) and loc[2] < len(rules) else None
            name = rule.get("name") if isinstance(rule, dict) else None
            head = f"{loc[0]} rule {loc[2] + 1}" + (f" ({name})" if name else "")
            return head + "".join(f": {p}" for p in loc[3:])
        return ".".join(map(str, loc))

    spec = build(ColumnRulesFile if columns is not None else RulesFile, raw, source, lines, name_of=rule_name)

    def where(group: str, i: int) -> str:
        line = lines.get((group, "rules", i))
        return f"{source}" + (f":{line}" if line else "") + f": {rule_name((group, 'rules', i))}"

    def column_rule(rule: ColumnRuleSpec, w: str) -> FitRule:
        attribute, values, rng = rule.attribute, rule.values, rule.range
        if attribute not in categorical and attribute not in numeric:
            raise ConfigError(f"{w}: unknown {'column' if columns is not None else 'attribute'} {attribute!r}; known: "
                              f"{', '.join(sorted([*categorical, *numeric]))}")
        if attribute in numeric:
            if values is not None or rng is None:
                raise ConfigError(f"{w}: {attribute} is numeric: give range: [min, max]")
        else:
            if rng is not None or values is None:
                raise ConfigError(f"{w}: {attribute} is categorical: give values: [...]")
            vocabulary = categorical[attribute]
            if vocabulary is not None:
                unknown = [v for v in values if v not in vocabulary]
                if unknown:
                    raise ConfigError(f"{w}: unknown {attribute} value(s) {unknown}; known: {', '.join(vocabulary)}")
            values = tuple(str(v) for v in values)
        return FitRule(name=rule.name or f"{attribute} {values or rng}", attribute=attribute, points=rule.points,
                       values=values, range=rng)

    fit_rules = [column_rule(rule, where("fit", i)) for i, rule in enumerate(spec.fit.rules)]
    if columns is not None:
        engagement_rules = [column_rule(rule, where("engagement", i)) for i, rule in enumerate(spec.engagement.rules)]
    else:
        engagement_rules = []
        for i, rule in enumerate(spec.engagement.rules):
            if rule.activity not in contract.kinds:
                raise ConfigError(f"{where('engagement', i)}: unknown activity type {rule.activity!r}; known: "
                                  f"{', '.join(contract.kinds)}")
            decay = rule.half_life_days if "half_life_days" in rule.model_fields_set else spec.engagement.half_life_days
            engagement_rules.append(EngagementRule(
                name=rule.name or rule.activity, activity=rule.activity, points=rule.points,
                window_days=rule.window_days, cap=rule.cap, half_life_days=decay))

    names = [r.name for r in fit_rules] + [r.name for r in engagement_rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: rule names must be unique; repeated: {dupes}")
    return RuleSet(
        fit_rules=tuple(fit_rules), engagement_rules=tuple(engagement_rules), fit_cap=spec.fit.cap,
        engagement_cap=spec.engagement.cap, total_cap=spec.total_cap, mql_threshold=spec.thresholds.mql,
        sql_threshold=spec.thresholds.sql, grid_fit=(spec.grid.fit.A, spec.grid.fit.B),
        grid_engagement=(spec.grid.engagement.one, spec.grid.engagement.two), source=source)


def load_rules(path: Path | str, contract: Contract = DEFAULT_CONTRACT,
               columns: Mapping[str, str] | None = None) -> RuleSet:
    path = Path(path)
    raw = load_yaml(path)
    return parse_rules(raw, str(path), yaml_lines(path), contract, columns)


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------

def _cap(points: np.ndarray, cap: float | None) -> np.ndarray:
    return points if cap is None else np.minimum(points, cap)


def _engagement_sql(rules: RuleSet) -> str:
    aggs = []
    for i, r in enumerate(rules.engagement_rules):
        cond = f"k = '{r.activity}'" + (f" AND age < {r.window_days!r}" if r.window_days is not None else "")
        weight = "1.0" if r.half_life_days is None else f"pow(0.5, age / {r.half_life_days!r})"
        aggs.append(f"coalesce(sum({r.points!r} * {weight}) FILTER (WHERE {cond}), 0) AS e{i}")
        aggs.append(f"count(*) FILTER (WHERE {cond}) AS c{i}")
    body = ",\n            ".join(aggs) if aggs else "0 AS _none"
    return f"""
        WITH acts AS (
            SELECT p.lead_id, p.as_of_us, a.activity_type AS k,
                   (p.as_of_us - epoch_us(a.occurred_at)) / 86400000000.0 AS age
            FROM _pairs p JOIN activities a
              ON a.lead_id = p.lead_id AND epoch_us(a.occurred_at) < p.as_of_us
        )
        SELECT lead_id, as_of_us,
            {body}
        FROM acts GROUP BY lead_id, as_of_us
    """


def score_baseline(
    tables: Mapping[str, TableSource] | duckdb.DuckDBPyConnection,
    rules: RuleSet,
    pairs: pd.DataFrame | None = None,
    *,
    as_of=None,
    rule_points: bool = False,
    explain: bool = True,
    contract: Contract = DEFAULT_CONTRACT,
) -> pd.DataFrame:
    """Baseline points per (lead, as_of), from data strictly before as_of.

    Columns: ``lead_id``, ``as_of``, ``fit_points``, ``engagement_points``, ``total_points``,
    ``baseline_tier`` (lead / MQL / SQL), ``grid`` (e.g. ``B2``) and ``fired_rules`` ("name
    +points (count x)" joined by "; ", largest first). With ``rule_points`` also one column per
    rule, ``rule: NAME``, with its (capped) points. ``explain=False`` skips ``fired_rules``
    (building the text is the slow part on millions of training examples). ``contract``: the
    data source's; attributes its attribute history covers are read as they were at as_of.
    """
    con, frame = _resolve_pairs(tables, pairs, as_of, contract)
    attributes_sql, engagement_sql = baseline_sql(rules, contract)
    con.register("_pairs", frame)
    try:
        base = con.execute(attributes_sql).df()
        eng = con.execute(engagement_sql).df()
    finally:
        con.unregister("_pairs")
    base = base.merge(eng, on=["lead_id", "as_of_us"], how="left", validate="one_to_one")
    return points_of(base.sort_values(["as_of_us", "lead_id"], kind="stable").reset_index(drop=True), rules,
                     explain, rule_points)


def baseline_sql(rules: RuleSet, contract: Contract = DEFAULT_CONTRACT) -> tuple[str, str]:
    """The two queries the points are computed from, per (lead_id, as_of_us) of ``_pairs``:
    the attributes the fit rules read (as of as_of), and each engagement rule's points ``e<i>``
    and count ``c<i>`` (a pair without activities has no row)."""
    used = list(dict.fromkeys(r.attribute for r in rules.fit_rules))
    attrs = "".join(f", {attribute_sql(contract, a)} AS {_quote(a)}" for a in used)
    history_cte, history_join = history_sql(contract)
    attributes = f"""
        WITH {history_cte.strip().rstrip(",") or "_none AS (SELECT 1)"}
        SELECT p.lead_id, p.as_of_us{attrs}
        FROM _pairs p JOIN leads l ON l.lead_id = p.lead_id AND epoch_us(l.created_at) < p.as_of_us
        {history_join}
    """
    return attributes, _engagement_sql(rules)


def points_of(base: pd.DataFrame, rules: RuleSet, explain: bool = True, rule_points: bool = False) -> pd.DataFrame:
    """The points table (:func:`score_baseline`'s columns) of the rows of the two
    :func:`baseline_sql` queries joined on (lead_id, as_of_us), in their order; row by row, so
    any slice of the rows gives its part of the whole."""
    n = len(base)
    per_rule: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    _column_points(rules.fit_rules, base, per_rule, counts)
    for i, r in enumerate(rules.engagement_rules):
        raw = base[f"e{i}"].fillna(0.0).to_numpy(dtype="float64") if n else np.zeros(0)
        if r.cap is not None:
            raw = np.sign(raw) * np.minimum(np.abs(raw), r.cap)
        per_rule[r.name] = raw
        counts[r.name] = base[f"c{i}"].fillna(0).to_numpy(dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    out = _with_as_of(base[["lead_id", "as_of_us"]].copy())
    return _points_table(out, rules, per_rule, counts, explain, rule_points)


def with_baseline_points(con: duckdb.DuckDBPyConnection, examples: pd.DataFrame, rules: RuleSet,
                         contract: Contract = DEFAULT_CONTRACT) -> pd.DataFrame:
    """``examples`` with the rule baseline's ``baseline_points``, ``baseline_tier`` and
    ``baseline_grid`` of each (lead, as-of) row, so the baseline is evaluated on exactly the
    model's rows (they are not model features)."""
    points = score_baseline(con, rules, examples[["lead_id", "as_of"]], explain=False, contract=contract)
    points = points[["lead_id", "as_of", "total_points", "baseline_tier", "grid"]].rename(
        columns={"total_points": "baseline_points", "grid": "baseline_grid"})
    return examples.merge(points, on=["lead_id", "as_of"], how="left", validate="one_to_one")


def score_flat_baseline(rules: RuleSet, frame: pd.DataFrame, explain: bool = True) -> pd.DataFrame:
    """Baseline points of a flat export's rows (its columns, as :func:`leadscore.training.flat.load_flat`
    reads them): ``fit_points``, ``engagement_points``, ``total_points``, ``baseline_tier``,
    ``grid`` and ``fired_rules``, one row per input row in input order."""
    per_rule: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    _column_points((*rules.fit_rules, *rules.engagement_rules), frame, per_rule, counts)
    return _points_table(pd.DataFrame(index=frame.index), rules, per_rule, counts, explain, False)


def _column_points(rules, frame: pd.DataFrame, per_rule: dict, counts: dict) -> None:
    """Points of rules on a column's values or range, into ``per_rule`` / ``counts``."""
    for r in rules:
        col = frame[r.attribute]
        if r.range is not None:
            values = pd.to_numeric(col, errors="coerce")
            hit = values.between(r.range[0], r.range[1]).fillna(False).to_numpy(dtype=bool)
        else:
            hit = col.astype("object").isin(set(r.values)).to_numpy(dtype=bool)
        per_rule[r.name] = np.where(hit, r.points, 0.0)
        counts[r.name] = hit.astype(np.int64)


def _points_table(out: pd.DataFrame, rules: RuleSet, per_rule: dict, counts: dict, explain: bool,
                  rule_points: bool) -> pd.DataFrame:
    """Group caps, total, tier, grid and fired rules, added to ``out``."""
    n = len(out)
    fit = _cap(sum((per_rule[r.name] for r in rules.fit_rules), np.zeros(n)), rules.fit_cap)
    engagement = _cap(sum((per_rule[r.name] for r in rules.engagement_rules), np.zeros(n)), rules.engagement_cap)
    total = _cap(fit + engagement, rules.total_cap)
    out["fit_points"] = fit
    out["engagement_points"] = engagement
    out["total_points"] = total
    out["baseline_tier"] = np.select([total >= rules.sql_threshold, total >= rules.mql_threshold],
                                     ["SQL", "MQL"], "lead")
    letter = np.select([fit >= rules.grid_fit[0], fit >= rules.grid_fit[1]], ["A", "B"], "C")
    digit = np.select([engagement >= rules.grid_engagement[0], engagement >= rules.grid_engagement[1]], ["1", "2"], "3")
    out["grid"] = np.strings.add(letter.astype(str), digit.astype(str))
    if explain:
        out["fired_rules"] = _fired(rules, per_rule, counts, n)
    if rule_points:
        for name in rules.rule_names:
            out[f"rule: {name}"] = per_rule[name]
    return out


def _fired(rules: RuleSet, per_rule: dict[str, np.ndarray], counts: dict[str, np.ndarray], n: int) -> np.ndarray:
    """'Demo request +100 (1x); C-level or VP +20' - rules with non-zero points, largest |points| first."""
    engagement = {r.name for r in rules.engagement_rules if isinstance(r, EngagementRule)}
    parts = []
    for order, name in enumerate(rules.rule_names):
        pts = np.round(per_rule[name])
        rows = np.flatnonzero(pts != 0)
        if not len(rows):
            continue
        text = pd.Series(pts[rows]).map("{:+.0f}".format).radd(f"{name} ")
        if name in engagement:
            text = text + " (" + pd.Series(counts[name][rows]).astype(str) + "x)"
        parts.append(pd.DataFrame({"row": rows, "size": -np.abs(pts[rows]), "order": order, "text": text.to_numpy()}))
    out = np.full(n, "", dtype=object)
    if parts:
        long = pd.concat(parts, ignore_index=True).sort_values(["row", "size", "order"], kind="stable")
        joined = long.groupby("row", sort=False)["text"].agg("; ".join)
        out[joined.index.to_numpy()] = joined.to_numpy()
    return out


# ---------------------------------------------------------------------------
# scikit-learn wrapper
# ---------------------------------------------------------------------------

class RuleBaselineClassifier(ClassifierMixin, BaseEstimator):
    """The baseline as an estimator: its total points are the ranking score.

    ``X`` carries the points precomputed by :func:`score_baseline` (column ``points_column``),
    so the baseline is evaluated on exactly the rows, split and metrics of the model.
    ``fit`` learns a monotone (isotonic) map from points to the observed rate, so that
    ``predict_proba`` is comparable in log loss and Brier score; ``decision_function`` is the
    raw points. ``fit``'s ``sample_weight`` (1 / each row's inclusion probability, when the rows
    are a sample of leads) weights that map, so it estimates the full population's rate.
    """

    def __init__(self, points_column: str = "baseline_points"):
        self.points_column = points_column

    def _points(self, X) -> np.ndarray:
        if self.points_column not in X:
            raise KeyError(f"X has no column {self.points_column!r} (add baseline points with score_baseline)")
        return np.asarray(X[self.points_column], dtype="float64")

    def fit(self, X, y, sample_weight=None):
        y = np.asarray(y).astype(int)
        w = sample_weights(sample_weight, len(y), "sample_weight")
        self.classes_ = np.array([0, 1])
        self.isotonic_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
            self._points(X), y, sample_weight=w)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self._points(X)

    def predict_proba(self, X) -> np.ndarray:
        p = np.clip(self.isotonic_.predict(self._points(X)), 1e-6, 1 - 1e-6)
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

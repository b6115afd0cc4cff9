"""Why a lead scored as it did: exact SHAP contributions, reasons in words, fit vs engagement.

**Contributions.** Per lead, one contribution per feature in *log-odds of the uncalibrated
model*, plus a base value; they add up exactly to the model's raw margin (``contributions +
base == margin``) for every model family: LightGBM's native TreeSHAP (``pred_contrib``) for
trees, the centred linear terms of the logistic regression, the weighted sum of both for a
blend (:mod:`leadscore.modeling.families`). A categorical such as ``industry`` is one
contribution, not one per encoded level.

**From margin to probability.** ``p_sql`` is the calibrator applied to that margin. The
calibrator (isotonic or sigmoid) is monotone, so a feature that raises the margin never
lowers ``p_sql``; but contributions are not additive in probability. Explanations therefore
show both numbers: the margin (and the base) the contributions add up to, and the calibrated
``p_sql`` that the cutoffs apply to.

**Fit vs engagement.** Summing contributions over the catalogue's ``fit`` features and over
its ``engagement`` features gives ``fit_score`` and ``engagement_score`` (log-odds). The
A/B/C x 1/2/3 grid cuts them at thresholds learned on the training data so that each letter
and each digit holds the same share of training examples as the rule baseline's grid: the
two grids are directly comparable (cross-tabulate them).

**Reasons in words.** A reason is a *signal*, not a column: every feature about one activity
kind (its counts in each window, its recency, and the "last activity" or "last hand-raiser"
recency when that kind was the latest) is one signal (:func:`signal_of`), so a lead's reasons
name each activity once. A signal's contribution is the sum of its features' (exact, as they
add up), and it is worded by its most telling feature - the one pushing hardest in the
signal's direction - with the lead's own values ("Requested a demo 3 days ago"). The top-k
signals that raise the odds and the top-k that lower them are shown, and none smaller than
:data:`MIN_CONTRIBUTION`. :data:`PHRASES` keys a phrase by feature name; codes read as labels
(:data:`VALUE_LABELS`, which a source YAML's ``value_labels`` override); a feature without a
phrase reads ``name = value``. ``--json`` keeps every feature's exact contribution.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadscore.data.contract import LABELLED_ATTRIBUTES
from leadscore.features import registry as R
from leadscore.features.kinds import HAND_RAISER_TYPES
from leadscore.features.phrases import DID, lower_first, missing, num, phrase_reads_row
from leadscore.modeling.model import ConversionModel, as_model_frame

GRID_LETTERS, GRID_DIGITS = ("A", "B", "C"), ("1", "2", "3")


# ---------------------------------------------------------------------------
# Exact contributions
# ---------------------------------------------------------------------------

@dataclass
class Contributions:
    """Per-row SHAP values of one model in log-odds: ``values`` (rows x features), ``base``
    (expected margin) and ``margin`` (the model's raw score; ``values.sum(1) + base``)."""

    values: pd.DataFrame
    base: np.ndarray
    margin: np.ndarray

    def additivity_error(self) -> float:
        """Largest |sum(contributions) + base - margin| over the rows."""
        if not len(self.margin):
            return 0.0
        return float(np.max(np.abs(self.values.to_numpy().sum(axis=1) + self.base - self.margin)))


def contributions(model: ConversionModel, frame: pd.DataFrame, matrix: pd.DataFrame | None = None) -> Contributions:
    """Exact SHAP contributions of ``model`` for the rows of ``frame``, whatever its family:
    TreeSHAP for trees (LightGBM ``pred_contrib``), the centred linear terms of a logistic
    regression, their weighted sum for a blend (:mod:`leadscore.modeling.families`).
    ``matrix``: the rows already prepared by ``model.matrix``."""
    X = as_model_frame(frame, model.features, model.levels) if matrix is None else matrix
    raw, base, margin = model.core.explain(X)
    values = pd.DataFrame(raw, columns=model.features, index=frame.index)
    return Contributions(values=values, base=np.asarray(base, dtype="float64"),
                         margin=np.asarray(margin, dtype="float64"))


def group_scores(contrib: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """``fit_score`` and ``engagement_score``: contributions summed over the catalogue's groups."""
    fit, engagement = _group_sums(contrib.to_numpy(), _group_columns(list(contrib.columns), catalogue))
    return pd.DataFrame({"fit_score": fit, "engagement_score": engagement}, index=contrib.index)


def _group_columns(features: list[str], catalogue: pd.DataFrame) -> dict[str, list[int]]:
    """The columns of ``features`` in the catalogue's fit and engagement groups."""
    group = dict(zip(catalogue["name"], catalogue["group"]))
    return {name: [j for j, f in enumerate(features) if group.get(f) == name] for name in ("fit", "engagement")}


def _group_sums(contrib: np.ndarray, columns: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(fit sums, engagement sums) of ``contrib`` over the groups' columns (:func:`_group_columns`),
    added column after column: a row's sum is the same alone or among any number of rows
    (``sum(axis=1)`` orders its additions by the array's shape)."""
    out = []
    for name in ("fit", "engagement"):
        total = np.zeros(len(contrib))
        for j in columns[name]:
            total += contrib[:, j]
        out.append(total)
    return tuple(out)


# ---------------------------------------------------------------------------
# The fit x engagement grid
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GridThresholds:
    """``fit``: (A from, B from) on ``fit_score``; ``engagement``: (1 from, 2 from) on
    ``engagement_score``. Learned by :func:`learn_grid`."""

    fit: tuple[float, float]
    engagement: tuple[float, float]

    def cells(self, fit_score, engagement_score) -> np.ndarray:
        fit_score, engagement_score = np.asarray(fit_score, float), np.asarray(engagement_score, float)
        letter = np.select([fit_score >= self.fit[0], fit_score >= self.fit[1]], ["A", "B"], "C")
        digit = np.select([engagement_score >= self.engagement[0], engagement_score >= self.engagement[1]],
                          ["1", "2"], "3")
        return np.strings.add(letter.astype(str), digit.astype(str))

    def to_dict(self) -> dict:
        return {"fit": list(self.fit), "engagement": list(self.engagement)}


def _cut_points(score: np.ndarray, share_top: float, share_middle: float) -> tuple[float, float]:
    """Thresholds that put ``share_top`` of ``score`` in the top class and ``share_middle`` in the next."""
    def at(share: float) -> float:
        if share <= 0:
            return math.inf
        if share >= 1:
            return -math.inf
        return float(np.quantile(score, 1 - share))

    top = at(share_top)
    return top, min(top, at(share_top + share_middle))


def learn_grid(fit_score, engagement_score, baseline_grid=None) -> GridThresholds:
    """Grid thresholds on training examples: the same share per letter and per digit as the
    baseline's grid on those examples (``baseline_grid`` like ``"B2"``), or thirds without it."""
    fit_score, engagement_score = np.asarray(fit_score, float), np.asarray(engagement_score, float)
    if not len(fit_score):
        raise ValueError("learn_grid needs at least one training example")
    if baseline_grid is None:
        shares_fit = shares_eng = (1 / 3, 1 / 3)
    else:
        cells = pd.Series(np.asarray(baseline_grid, dtype=str))
        letters, digits = cells.str[0], cells.str[1]
        shares_fit = tuple(float((letters == x).mean()) for x in GRID_LETTERS[:2])
        shares_eng = tuple(float((digits == x).mean()) for x in GRID_DIGITS[:2])
    return GridThresholds(fit=_cut_points(fit_score, *shares_fit),
                          engagement=_cut_points(engagement_score, *shares_eng))


# ---------------------------------------------------------------------------
# The phrase catalogue
# ---------------------------------------------------------------------------

EMAIL_DOMAINS = {"student": "Uses a student e-mail address", "free": "Uses a free e-mail address",
                 "corporate": "Uses a corporate e-mail address",
                 "competitor": "E-mail domain belongs to a competitor"}


Phrase = Callable[[object], str]  # a fit feature's phrase: value -> text


# How codes of the built-in vocabulary read; a source YAML's value_labels (and an attribute's
# labels) override or extend them. A code not listed reads with _ as a space, capitalised.
VALUE_LABELS: dict[str, dict[str, str]] = {
    "lead_source": {"organic_search": "organic search", "paid_search": "paid search ads", "social": "social media",
                    "email_campaign": "an e-mail campaign", "webinar": "a webinar", "referral": "a referral",
                    "direct": "the website directly", "events": "an event", "partner": "a partner",
                    "content_syndication": "content syndication (gated content on other sites)"},
    "department": {"it": "IT", "hr": "HR"},
    "seniority": {"c_level": "C-level", "vp": "VP", "individual_contributor": "Individual contributor"},
    "region": {"emea": "EMEA", "apac": "APAC"},
}
_ACRONYMS = {"it": "IT", "hr": "HR", "vp": "VP", "ceo": "CEO", "cto": "CTO", "cfo": "CFO", "ppc": "PPC",
             "seo": "SEO", "sms": "SMS", "emea": "EMEA", "apac": "APAC", "saas": "SaaS", "b2b": "B2B"}


def value_label(feature: str, code, labels: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """How a code reads: ``labels`` (a source's value_labels), then :data:`VALUE_LABELS`, then, for
    the built-in vocabulary's snake_case codes, the code with ``_`` as spaces and a capital
    ("heavy_machinery" -> "Heavy machinery"); any other value as it is ("lp-2", "Financial Services")."""
    code = str(code)
    for catalogue in (labels or {}, VALUE_LABELS):
        if code in catalogue.get(feature, {}):
            return catalogue[feature][code]
    if feature not in LABELLED_ATTRIBUTES or not re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*", code):
        return code
    words = [_ACRONYMS.get(w, w) for w in code.split("_")]
    return " ".join(words)[:1].upper() + " ".join(words)[1:]


def _categorical(label: str, feature: str, labels: Mapping | None = None, sep: str = ": ") -> Phrase:
    return lambda v: f"{label} unknown" if v in (None, "missing") else f"{label}{sep}{value_label(feature, v, labels)}"


_BUILT_IN_CATEGORICALS = {"seniority": ("Seniority", ": "), "department": ("Department", ": "),
                          "company_size_band": ("Company size (employees)", ": "), "industry": ("Industry", ": "),
                          "country": ("Country", ": "), "region": ("Region", ": "),
                          "lead_source": ("Came in through", " ")}
# The fit features' phrases (the engagement features' sit in leadscore.features.registry).
PHRASES: dict[str, Phrase] = {
    **{feature: _categorical(label, feature, sep=sep) for feature, (label, sep) in _BUILT_IN_CATEGORICALS.items()},
    "email_domain_type": lambda v: EMAIL_DOMAINS.get(str(v), "E-mail domain type unknown"),
}

def declared_phrases(config) -> dict[str, Callable[[object, Mapping | None], str]]:
    """Phrases, ``(value, row) -> text``, for what a data source declares (a
    :class:`leadscore.features.builder.FeatureConfig`'s contract): "Landing page = lp-0412" for a custom
    attribute, "Viewed the catalogue 3 times in the last 30 days" / "Never viewed the catalogue"
    for a declared activity kind (its description is a past-tense phrase), and the hand-raiser
    and last-activity phrases that name declared kinds too."""
    contract = config.contract
    out: dict[str, Callable[[object, Mapping | None], str]] = {}
    labels = contract.labels
    for feature, (label, sep) in _BUILT_IN_CATEGORICALS.items():
        if feature in labels:
            phrase = _categorical(label, feature, labels, sep)
            out[feature] = lambda v, row=None, phrase=phrase: phrase(v)
    for a in contract.attributes:
        label = a.display
        if a.kind == "categorical":
            out[a.name] = lambda v, row=None, label=label, name=a.name: (
                f"{label} unknown" if v in (None, "missing") else f"{label} = {value_label(name, v, labels)}")
        else:
            out[a.name] = lambda v, row=None, label=label: (f"{label} unknown" if missing(v)
                                                            else f"{label} = {num(v):,.4g}")
    words = R.words_of(config)
    for f in R.engagement_features(config):  # the activity phrases, naming the source's kinds too
        if f.phrase is not None:
            out[f.name] = functools.partial(f.phrase, words=words)
    return out


def flat_phrases(catalogue: pd.DataFrame) -> dict[str, Callable[[object, Mapping | None], str]]:
    """Phrases of a flat export's columns: "Lead Source = Reference", "Lead Source not given",
    "Total Time Spent on Website = 1,250"."""
    out: dict[str, Callable[[object, Mapping | None], str]] = {}
    for name, kind in zip(catalogue["name"], catalogue["kind"]):
        if kind == "categorical":
            out[name] = lambda v, row=None, n=name: f"{n} not given" if v in (None, "missing") else f"{n} = {v}"
        else:
            out[name] = lambda v, row=None, n=name: f"{n} not given" if missing(v) else f"{n} = {num(v):,.4g}"
    return out


def _plain(value) -> object:
    """A JSON-friendly scalar."""
    if missing(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _phrase(feature: str, declared: Mapping | None) -> Callable[[object, Mapping | None], str] | None:
    """The phrase ``(value, row) -> text`` of ``feature``: a source's declared one, a fit feature's,
    an engagement feature's; None: the feature reads as ``name = value``."""
    if declared and feature in declared:
        return declared[feature]
    if feature in PHRASES:
        return lambda v, row=None, phrase=PHRASES[feature]: phrase(v)
    return R.phrase_of(feature)


def describe(feature: str, value, row: Mapping | None = None, declared: Mapping | None = None,
             phrase=False) -> str:
    """The feature and the lead's value in words ("Requested a demo 3 days ago"), or
    ``name = value``. ``row``: the lead's other feature values, which some phrases use to be
    specific (which hand-raiser action was the latest); ``declared``: phrases of a source's
    attributes and kinds (:func:`declared_phrases`), which win. ``phrase``: the feature's phrase
    already looked up (None: it has none)."""
    value = _plain(value)
    phrase = _phrase(feature, declared) if phrase is False else phrase
    try:
        if phrase is not None:
            return phrase(value, row)
    except (TypeError, ValueError):  # an unexpected value type: say it plainly
        pass
    if isinstance(value, float):
        value = f"{value:.3g}"
    return f"{feature} = {'missing' if value is None else value}"


class _Row(Mapping):
    """Row ``i`` of a frame's columns (numpy arrays by name), read as a mapping without building it."""

    def __init__(self, columns: Mapping[str, np.ndarray], i: int):
        self._columns, self._i = columns, i

    def __getitem__(self, name: str):
        return self._columns[name][self._i]

    def get(self, name: str, default=None):
        column = self._columns.get(name)
        return default if column is None else column[self._i]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


# ---------------------------------------------------------------------------
# Explanations of scored rows
# ---------------------------------------------------------------------------

MIN_CONTRIBUTION = 0.05  # log-odds: a reason moving the odds by less than about 5 % is not shown

# Features that speak of one signal (the rest: an activity kind's counts and recency, below).
# Recencies of "the latest" activity: the signal of the kind that was the latest, where the row tells.
_LATEST = {"days_since_last_activity": "kinds", "days_since_last_hand_raiser": "raisers"}


def signal_of(feature: str) -> str:
    """The signal a feature speaks of (:func:`leadscore.features.registry.signal_of`): an activity
    kind for its counts in every window and its recency, ``activity`` / ``hand_raiser`` for the
    all-kinds aggregates, ``mql`` / ``disqualified`` for the lifecycle history; any other
    feature is a signal of its own."""
    return R.signal_of(feature)


def _signal_codes(values, n: int, kinds, raisers) -> tuple[list[str], np.ndarray]:
    """Signal names and, per row and feature, the signal index (``values``: a frame or a mapping
    of ``n`` values per feature). The "latest activity" recencies join the signal of the kind
    they name in that row (as their phrase does: :func:`_latest_kind`)."""
    features = list(values.keys())
    layout = _layout(tuple(features))
    names, index = list(layout.names), layout.index
    codes = np.broadcast_to(layout.codes, (n, len(features))).copy()
    for j, f in enumerate(features):
        if f not in _LATEST:
            continue
        days = _numbers(values[f])
        unset = ~np.isnan(days)
        for kind in (kinds if _LATEST[f] == "kinds" else [k for k in raisers if k in kinds]):
            col = f"days_since_{kind}"
            if kind not in index or col not in values:
                continue
            other = _numbers(values[col])
            with np.errstate(invalid="ignore"):
                hit = unset & (np.abs(other - days) <= 1e-9 * np.maximum(1.0, np.abs(days)))
            codes[hit, j] = index[kind]
            unset &= ~hit
    return names, codes


def _numbers(values) -> np.ndarray:
    """float64 values of a column (text that is no number: NaN)."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    return np.asarray(pd.to_numeric(values, errors="coerce"), dtype="float64")


@dataclass(frozen=True)
class _Layout:
    """The signals of a list of features, the same for every row: ``names`` (in first-feature
    order), ``index`` (name -> position), ``codes`` (each feature's signal), ``own`` (per signal,
    its columns but the "latest" recencies) and ``latest`` (the "latest" recencies' columns)."""

    names: tuple[str, ...]
    index: dict[str, int]
    codes: np.ndarray
    own: dict[int, list[int]]
    latest: list[int]


@functools.lru_cache(maxsize=64)
def _layout(features: tuple[str, ...]) -> _Layout:
    static = [signal_of(f) for f in features]
    names = tuple(dict.fromkeys(static))
    index = {name: i for i, name in enumerate(names)}
    own = {g: [] for g in range(len(names))}
    for j, f in enumerate(features):
        if f not in _LATEST:
            own[index[static[j]]].append(j)
    codes = np.array([index[x] for x in static], dtype="int64")
    codes.flags.writeable = False
    return _Layout(names, index, codes, own, [j for j, f in enumerate(features) if f in _LATEST])


@dataclass
class Ranked:
    """The reasons shown per row, as arrays: ``up`` / ``down`` (rows x k signal indices, -1 past
    the last one shown), their signal sums ``up_sum`` / ``down_sum``, their most telling
    feature ``up_best`` / ``down_best`` (column index) and its text ``up_text`` / ``down_text``
    (None past the last one). ``names``: the signals; ``codes``: rows x features, each
    feature's signal in that row; ``own``: per signal, the columns that are its in every row
    (the "latest" recencies join a signal row by row); ``features``: the column names."""

    features: list[str]
    names: list[str]
    codes: np.ndarray
    own: dict[int, list[int]]
    up: np.ndarray
    up_sum: np.ndarray
    up_best: np.ndarray
    up_text: np.ndarray
    down: np.ndarray
    down_sum: np.ndarray
    down_best: np.ndarray
    down_text: np.ndarray

    def lines(self) -> list[str]:
        """Per row, the reasons as one line of text (:func:`reasons_line`)."""
        parts = []
        for signals, sums, texts, verb in ((self.up, self.up_sum, self.up_text, "raises"),
                                           (self.down, self.down_sum, self.down_text, "lowers")):
            shown = signals >= 0   # row by row, rank by rank: as np.nonzero orders them
            per_row: list[list[str]] = [[] for _ in range(len(signals))]
            for i, t, c in zip(np.nonzero(shown)[0].tolist(), texts[shown].tolist(), sums[shown].tolist()):
                per_row[i].append(f"{t}: {verb} ({c:+.2f})")
            parts.append(per_row)
        out = []
        for up, down in zip(*parts):
            text = "; ".join(up)
            if down:
                text += (" | " if text else "") + "against: " + "; ".join(down)
            out.append(text)
        return out

    def reasons(self, values: pd.DataFrame) -> tuple[list[list[dict]], list[list[dict]]]:
        """Per row, the reasons for and against as dicts (:func:`top_reasons`)."""
        own = {g: [self.features[j] for j in columns] for g, columns in self.own.items()}
        latest = [j for j, f in enumerate(self.features) if f in _LATEST]
        columns = {f: np.asarray(values[f]) for f in self.features}
        out = []
        for signals, sums, best, texts in ((self.up, self.up_sum, self.up_best, self.up_text),
                                           (self.down, self.down_sum, self.down_best, self.down_text)):
            per_row = []
            for i in range(len(signals)):
                reasons = []
                for r in range(signals.shape[1]):
                    g = int(signals[i, r])
                    if g < 0:
                        break
                    f = self.features[best[i, r]]
                    reasons.append({"signal": self.names[g], "contribution": float(sums[i, r]), "feature": f,
                                    "value": _plain(columns[f][i]), "text": texts[i, r],
                                    "features": own[g] + [self.features[j] for j in latest if self.codes[i, j] == g]})
                per_row.append(reasons)
            out.append(per_row)
        return out[0], out[1]


def rank_reasons(contrib: np.ndarray, values: pd.DataFrame, k: int, declared: Mapping | None = None,
                 min_contribution: float = MIN_CONTRIBUTION, kinds=tuple(DID),
                 raisers=HAND_RAISER_TYPES) -> Ranked:
    """Per row, the ``k`` signals that raise the odds most and the ``k`` that lower them most,
    each at least ``min_contribution`` (log-odds) either way, with the text of each one's most
    telling feature (the largest contribution in the signal's direction). ``contrib`` is rows x
    features in the column order of ``values`` (a frame, or a mapping of one array per feature);
    ``declared``: phrases of a source's attributes and kinds; ``kinds`` / ``raisers``: the
    activity kinds and hand-raiser kinds, in the order phrases name them. Vectorised over rows;
    each distinct text is written once."""
    if min_contribution < 0:
        raise ValueError(f"min_contribution must be >= 0 (log-odds), got {min_contribution!r}")
    features = list(values.keys())
    contrib = np.asarray(contrib, dtype="float64")
    n = len(contrib)
    names, codes = _signal_codes(values, n, list(kinds), raisers)
    rows = np.arange(n)
    # a signal's sum: its own features' (the same in every row), then the "latest" recencies
    # added to the signal they name in each row
    layout = _layout(tuple(features))
    latest, own = layout.latest, layout.own
    by_signal = [j for g in own for j in own[g]]
    starts = np.cumsum([0] + [len(own[g]) for g in own])[:-1]
    sums = np.zeros((n, len(names)))
    with_own = [g for g in own if own[g]]
    if by_signal:
        sums[:, with_own] = np.add.reduceat(contrib[:, by_signal], starts[with_own], axis=1)
    for j in latest:
        sums[rows, codes[:, j]] += contrib[:, j]
    kk = min(k, len(names))
    ranked = {}
    for side, order in (("up", np.argsort(-sums, axis=1, kind="stable")),
                        ("down", np.argsort(sums, axis=1, kind="stable"))):
        signals = order[:, :kk]
        s = np.take_along_axis(sums, signals, axis=1)
        shown = (s >= min_contribution) & (s > 0) if side == "up" else (s <= -min_contribution) & (s < 0)
        pushing = contrib if side == "up" else -contrib
        best = np.zeros(signals.shape, dtype="int64")
        for r in range(kk):   # the signal's feature pushing hardest its way (the first of equals)
            for g in np.unique(signals[shown[:, r], r]):
                at = np.flatnonzero(shown[:, r] & (signals[:, r] == g))
                columns = np.array(sorted(own[g] + latest), dtype="int64")
                block = pushing[np.ix_(at, columns)]
                for position, j in enumerate(columns):
                    if j in latest:   # a "latest" recency is the signal's only where it names it
                        block[codes[at, j] != g, position] = -np.inf
                best[at, r] = columns[np.argmax(block, axis=1)]
        ranked[side] = (np.where(shown, signals, -1), s, best)
    (up, up_sum, up_best), (down, down_sum, down_best) = ranked["up"], ranked["down"]
    up_text, down_text = _texts(values, names, codes, declared, [(up, up_best), (down, down_best)])
    return Ranked(features, names, codes, own, up, up_sum, up_best, up_text, down, down_sum, down_best, down_text)


def _texts(values, names: list[str], codes: np.ndarray, declared: Mapping | None,
           chosen: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """The text of each chosen (row, feature) (``chosen``: pairs of signal and feature-index
    arrays, a signal of -1 not shown), each distinct text written once: per feature and value
    for a phrase of the value alone; for a phrase that reads the row (which activity was the
    latest), per feature, value and what the row's "latest" recencies say - their values and
    the kind each names (``codes`` into ``names``), which is all such a phrase reads."""
    features = list(values.keys())
    latest = _layout(tuple(features)).latest
    columns = {f: np.asarray(values[f]) for f in features if f in _LATEST or f.startswith("days_since_")}
    factorised: dict[int, tuple[np.ndarray, object]] = {}

    def column(f: str) -> np.ndarray:
        if f not in columns:
            columns[f] = np.asarray(values[f])
        return columns[f]

    def factor(j: int) -> np.ndarray:
        if j not in factorised:
            factorised[j] = pd.factorize(values[features[j]], use_na_sentinel=True)
        return factorised[j][0]

    def row_of(i: int) -> dict:
        """What a row-reading phrase reads of row ``i``: the "latest" recencies and the recency
        of the kind each names."""
        row = {}
        for lj in latest:
            row[features[lj]] = columns[features[lj]][i]
            named = f"days_since_{names[codes[i, lj]]}"
            if named in columns:
                row[named] = columns[named][i]
        return row

    out = []
    for signals, best in chosen:
        text = np.full(signals.shape, None, dtype=object)
        i_of, r_of = np.nonzero(signals >= 0)
        j_of = best[i_of, r_of]
        for j in np.unique(j_of):
            at = j_of == j
            i = i_of[at]
            f = features[j]
            phrase = _phrase(f, declared)
            reads_row = phrase is not None and phrase_reads_row(phrase)
            if len(i) == 1:   # one row says it: its value as it is (what factorising would give back)
                value = column(f)[i[0]]
                text[i[0], r_of[at][0]] = describe(f, None if pd.isna(value) else value,
                                                   row_of(int(i[0])) if reads_row else None, phrase=phrase)
                continue
            key = factor(j)[i][:, None]
            if reads_row:
                key = np.column_stack([key, *(codes[i, lj] for lj in latest), *(factor(lj)[i] for lj in latest)])
            _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
            uniques = np.asarray(factorised[j][1], dtype=object)
            said = [describe(f, None if key[n, 0] < 0 else uniques[key[n, 0]],
                             row_of(int(i[n])) if reads_row else None, phrase=phrase) for n in first]
            text[i, r_of[at]] = np.asarray(said, dtype=object)[inverse.reshape(-1)]
        out.append(text)
    return out


def top_reasons(contrib: np.ndarray, values: pd.DataFrame, k: int, declared: Mapping | None = None,
                min_contribution: float = MIN_CONTRIBUTION, kinds=tuple(DID),
                raisers=HAND_RAISER_TYPES) -> tuple[list[list[dict]], list[list[dict]]]:
    """Per row, the ``k`` signals that raise the odds most and the ``k`` that lower them most
    (:func:`rank_reasons`), in words: each ``{"signal", "contribution"`` (the signal's features
    summed)``, "feature", "value", "text"`` (its most telling feature)``, "features"}`` (every
    feature of the signal in that row)."""
    ranked = rank_reasons(contrib, values, k, declared, min_contribution, kinds, raisers)
    return ranked.reasons(values)


REASONS_NOTE = ("Each reason's number is its effect on the model's log-odds of conversion: +0.69 doubles the "
                "odds, -0.69 halves them, 0 leaves them.")


def reason_text(reason: dict) -> str:
    """'Requested a demo today: raises (+0.48)' / 'Uses a student e-mail address: lowers (-0.41)'."""
    c = reason["contribution"]
    return f"{reason['text']}: {'raises' if c > 0 else 'lowers'} ({c:+.2f})"


def _digits(p: float, *above: float) -> int:
    """Significant digits (at least 3) that keep ``p`` printed apart from each value it is below:
    printed numbers then never contradict the verdict ('0.006 < 0.006')."""
    for d in range(3, 18):
        if all(f"{p:.{d}g}" != f"{t:.{d}g}" for t in above if p < t):
            return d
    return 17


def decision_sentence(p: float, tier: str, mql_cutoff: float, sql_cutoff: float,
                      positive: list[dict], negative: list[dict], probability: str = "p_sql") -> str:
    """'MQL: p_sql 0.31 >= MQL cutoff 0.18 (SQL cutoff 0.45); strongest reasons: ...' (``probability``:
    the name of the primary label's probability, p_sql or p_won). Numbers carry as many
    significant digits as it takes for the printed comparison to hold (at least 3)."""
    if tier == "SQL":
        d = _digits(p)
        rule = f"{probability} {p:.{d}g} >= SQL cutoff {sql_cutoff:.{d}g}"
    elif tier == "MQL":
        d = _digits(p, sql_cutoff)
        rule = f"{probability} {p:.{d}g} >= MQL cutoff {mql_cutoff:.{d}g} (SQL cutoff {sql_cutoff:.{d}g})"
    else:
        d = _digits(p, mql_cutoff)
        rule = f"{probability} {p:.{d}g} < MQL cutoff {mql_cutoff:.{d}g}"
    lead_with = positive if tier != "lead" else negative
    word = "strongest reasons" if tier != "lead" else "strongest reasons against"
    if not lead_with:
        return f"{tier}: {rule}"
    return f"{tier}: {rule}; {word}: " + "; ".join(reason_text(r) for r in lead_with)


def scorer_vocabulary(scorer) -> tuple[dict, tuple[str, ...], tuple[str, ...]]:
    """(phrases, activity kinds, hand-raiser kinds) the scorer's reasons are worded with: its
    source's declared phrases and kinds (in the order phrases name them), or a flat export's."""
    if scorer.flat:
        return flat_phrases(scorer.catalogue), (), ()
    config = scorer.feature_config
    return (declared_phrases(config), tuple(dict.fromkeys([*DID, *config.contract.kinds])),
            tuple(config.hand_raisers))


@dataclass
class Explained:
    """Scored rows as arrays, of the primary label's model where not said otherwise: each
    probability column (``probabilities``), the 1-99 ``score`` and ``tier``, the exact
    contributions (rows x the model's features), ``base`` and ``margin``, ``fit_score`` /
    ``engagement_score``, the ``grid`` cell (None without a grid) and the reasons ranked."""

    probabilities: dict[str, np.ndarray]
    score: np.ndarray
    tier: np.ndarray
    contrib: np.ndarray
    base: np.ndarray
    margin: np.ndarray
    fit_score: np.ndarray
    engagement_score: np.ndarray
    grid: np.ndarray | None
    ranked: Ranked


@dataclass(frozen=True)
class ExplainTables:
    """What explaining a scorer's rows reads besides the rows, the same on every call: the
    phrases and kinds the reasons are worded with (:func:`scorer_vocabulary`) and the primary
    model's columns summed into fit_score and engagement_score."""

    phrases: dict
    kinds: tuple[str, ...]
    raisers: tuple[str, ...]
    groups: dict[str, list[int]]

    @classmethod
    def of(cls, scorer) -> ExplainTables:
        return cls(*scorer_vocabulary(scorer), _group_columns(list(scorer.primary_model.features), scorer.catalogue))


def explain_matrices(scorer, matrices: dict, values, k: int, min_contribution: float = MIN_CONTRIBUTION,
                     tables: ExplainTables | None = None) -> Explained:
    """Score and explain rows from their model matrices (``Scorer.matrices``, by label) and the
    primary model's feature values (a frame, or a mapping of one array per feature): each
    model's margin computed once - the primary's with its contributions - then the calibrated
    probabilities, score, tier, fit x engagement and the reasons (``tables``: the scorer's
    :class:`ExplainTables`, made here when not given). What batch scoring, ``explain`` and the
    served requests all go through."""
    if k < 1:
        raise ValueError(f"k (reasons per direction) must be >= 1, got {k}")
    model = scorer.primary_model
    contrib, base, margin = model.core.explain(matrices[scorer.primary])
    contrib, base, margin = (np.asarray(contrib, dtype="float64"), np.asarray(base, dtype="float64"),
                             np.asarray(margin, dtype="float64"))
    margins = {name: margin if name == scorer.primary else other.core.decision_function(matrices[name])
               for name, other in scorer.models.items()}
    probabilities = scorer.probabilities_of(margins, len(margin))
    p = probabilities[scorer.probability]
    tables = ExplainTables.of(scorer) if tables is None else tables
    fit_score, engagement_score = _group_sums(contrib, tables.groups)
    grid = getattr(scorer, "grid", None)
    return Explained(probabilities, scorer.score_points(p), scorer.cutoffs.tier(p), contrib, base, margin,
                     fit_score, engagement_score, None if grid is None else grid.cells(fit_score, engagement_score),
                     rank_reasons(contrib, values, k, tables.phrases, min_contribution, tables.kinds, tables.raisers))


def _explained(scorer, frame: pd.DataFrame, k: int, min_contribution: float) -> tuple[pd.DataFrame, Contributions,
                                                                                     Ranked, pd.DataFrame]:
    """The scored rows with margin, base, p_uncalibrated, fit/engagement scores and grid; the
    primary model's contributions; the reasons ranked; the rows as prepared."""
    frame = scorer.prepare(frame)
    model = scorer.primary_model
    e = explain_matrices(scorer, scorer.matrices(frame), frame[model.features], k, min_contribution)
    out = pd.DataFrame({**scorer.keys(frame), **e.probabilities,
                        "score": e.score, "tier": pd.array(e.tier, dtype="str"),
                        "margin": e.margin, "base": e.base, "p_uncalibrated": 1.0 / (1.0 + np.exp(-e.margin)),
                        "fit_score": e.fit_score, "engagement_score": e.engagement_score,
                        "grid": e.grid if e.grid is not None else None})
    contrib = Contributions(values=pd.DataFrame(e.contrib, columns=model.features, index=frame.index),
                            base=e.base, margin=e.margin)
    return out, contrib, e.ranked, frame


def explain_rows(scorer, frame: pd.DataFrame, k: int = 3,
                 min_contribution: float = MIN_CONTRIBUTION) -> tuple[pd.DataFrame, Contributions]:
    """One row per input row: lead_id, as_of, p_sql, p_won, tier, margin, base, p_uncalibrated,
    fit_score, engagement_score, grid, decision, positive and negative reasons (lists of dicts),
    all of the primary label's model. Returns it with that model's :class:`Contributions`."""
    out, contrib, ranked, frame = _explained(scorer, frame, k, min_contribution)
    positives, negatives = ranked.reasons(frame[scorer.primary_model.features])
    decisions = [decision_sentence(p, t, scorer.cutoffs.mql, scorer.cutoffs.sql, pos, neg, scorer.probability)
                 for p, t, pos, neg in zip(out[scorer.probability].to_numpy(dtype=float), out["tier"].astype(str),
                                           positives, negatives)]
    out["decision"] = decisions
    out["reasons_positive"] = positives
    out["reasons_negative"] = negatives
    return out, contrib


def explain_lines(scorer, frame: pd.DataFrame, k: int = 3,
                  min_contribution: float = MIN_CONTRIBUTION) -> pd.DataFrame:
    """:func:`explain_rows` with the reasons as one line of text per row (``reasons``: what
    :func:`reasons_line` makes of the reasons), without the decision sentence or a dict per
    reason: what batch scoring and the served model write."""
    out, _, ranked, _ = _explained(scorer, frame, k, min_contribution)
    out["reasons"] = ranked.lines()
    return out


def reasons_line(positive: list[dict], negative: list[dict]) -> str:
    """One cell of text: 'Requested a demo today: raises (+0.48); ... | against: Uses a student e-mail
    address: lowers (-0.41)'."""
    text = "; ".join(reason_text(r) for r in positive)
    if negative:
        text += (" | " if text else "") + "against: " + "; ".join(reason_text(r) for r in negative)
    return text


CHANGE_NOTE = ("Each change is how much that signal's effect on the model's log-odds moved between the two "
               "moments; with the base value they add up to the change in the model's margin.")


def change_reasons(scorer, before: pd.DataFrame, after: pd.DataFrame, k: int = 3,
                   min_change: float = MIN_CONTRIBUTION) -> pd.DataFrame:
    """Why each lead's score moved: ``before`` and ``after`` are feature rows of the same leads (in
    the same order) at two moments, scored by the same model. Per lead, the ``k`` signals whose
    contribution moved most either way (at least ``min_change`` log-odds), in words - the
    signal's most telling feature (the largest move in the signal's direction) now, and what
    it was: "Requested a demo 2 days ago (was: never requested a demo): raises (+0.41)".

    Returns lead_id, margin_before, margin_after and ``change_reasons`` (list of dicts
    ``{"signal", "contribution"`` (the move), ``"feature", "before", "after", "text", "features"}``)
    and ``change_line`` (them as one line). Over all signals the moves add up to
    ``margin_after - margin_before`` (the base is the model's own, the same at both moments)."""
    if k < 1:
        raise ValueError(f"k (change reasons per lead) must be >= 1, got {k}")
    if len(before) != len(after) or not np.array_equal(before["lead_id"].astype(str).to_numpy(),
                                                       after["lead_id"].astype(str).to_numpy()):
        raise ValueError("before and after must hold the same leads in the same order")
    before, after = scorer.prepare(before), scorer.prepare(after)
    model = scorer.primary_model
    c_before, c_after = contributions(model, before), contributions(model, after)
    features = list(model.features)
    delta = c_after.values.to_numpy() - c_before.values.to_numpy()
    signal = [signal_of(f) for f in features]
    names = list(dict.fromkeys(signal))
    members = {g: [f for f, s in zip(features, signal) if s == name] for g, name in enumerate(names)}
    code = np.array([names.index(s) for s in signal])
    sums = np.zeros((len(delta), len(names)))
    for j in range(len(features)):
        sums[:, code[j]] += delta[:, j]
    phrases, _, _ = scorer_vocabulary(scorer)
    then = {f: before[f].to_numpy() for f in features}
    now = {f: after[f].to_numpy() for f in features}
    columns_of = {g: np.flatnonzero(code == g) for g in range(len(names))}
    out_reasons, lines = [], []
    for i in range(len(delta)):
        order = np.argsort(-np.abs(sums[i]), kind="stable")
        chosen = [g for g in order[:k] if abs(sums[i, g]) >= min_change and sums[i, g] != 0]
        reasons = []
        for g in chosen:
            cols = columns_of[g]
            f = features[cols[np.argmax(np.sign(sums[i, g]) * delta[i, cols])]]
            was = describe(f, then[f][i], _Row(then, i), phrases)
            is_ = describe(f, now[f][i], _Row(now, i), phrases)
            text = f"{is_} (was: {lower_first(was)})" if is_ != was else f"{is_} (unchanged, weighs differently now)"
            reasons.append({"signal": names[g], "contribution": float(sums[i, g]), "feature": f,
                            "before": _plain(then[f][i]), "after": _plain(now[f][i]), "text": text,
                            "features": members[g]})
        out_reasons.append(reasons)
        lines.append("; ".join(reason_text(r) for r in reasons))
    return pd.DataFrame({"lead_id": after["lead_id"].to_numpy(), "margin_before": c_before.margin,
                         "margin_after": c_after.margin, "change_reasons": out_reasons, "change_line": lines})


MARGIN_NOTE = ("Contributions are in log-odds of the uncalibrated model and add up, with the base value, "
               "to its margin. The probability is the calibrator applied to that margin; the calibrator is "
               "monotone, so a positive contribution never lowers it, but the same contribution moves it by "
               "different amounts at different margins.")


# ---------------------------------------------------------------------------
# The global view: importance, beeswarm, dependence, fit vs engagement
# ---------------------------------------------------------------------------

def importance_table(contrib: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """feature, group, mean |SHAP| (log-odds), largest first."""
    group = catalogue.set_index("name")["group"]
    imp = contrib.abs().mean().sort_values(ascending=False, kind="stable")
    return pd.DataFrame({"feature": imp.index, "group": [group.get(f, "other") for f in imp.index],
                         "mean_abs_shap": imp.to_numpy()})


def _numeric_view(frame: pd.DataFrame, features: list[str], levels: dict) -> pd.DataFrame:
    """Feature values for colouring plots: categoricals as their training codes."""
    X = as_model_frame(frame, features, levels)
    for col in levels:
        codes = X[col].cat.codes.astype("float64")
        X[col] = codes.where(codes >= 0)
    return X.astype("float64")


def global_figures(model: ConversionModel, frame: pd.DataFrame, catalogue: pd.DataFrame,
                   max_display: int = 20, n_dependence: int = 3) -> dict[str, bytes]:
    """PNG figures from SHAP on ``frame`` (a sample of scored rows): ``shap_importance.png``,
    ``shap_beeswarm.png``, ``shap_groups.png`` and ``shap_dependence_<feature>.png`` for the
    top features."""
    import matplotlib.pyplot as plt  # shap's plots draw on pyplot
    import shap

    from leadscore.reporting.report import figure_png, new_figure

    contrib = contributions(model, frame)
    table = importance_table(contrib.values, catalogue)
    X = _numeric_view(frame, model.features, model.levels)
    figures: dict[str, bytes] = {}

    top = table.head(max_display).iloc[::-1]
    fig = new_figure(7, 0.3 * len(top) + 1.2)
    ax = fig.subplots()
    colours = ["#1f77b4" if g == "fit" else "#ff7f0e" for g in top["group"]]
    ax.barh(top["feature"], top["mean_abs_shap"], color=colours)
    ax.set_xlabel("mean |SHAP| (log-odds of becoming an SQL); blue = fit, orange = engagement")
    ax.set_title("Feature importance")
    figures["shap_importance.png"] = figure_png(fig)

    plt.close("all")
    shap.summary_plot(contrib.values.to_numpy(), X, max_display=max_display, show=False)
    figures["shap_beeswarm.png"] = _pyplot_png(plt)

    for feature in table["feature"].head(n_dependence):
        if feature in model.levels:  # by category name, not by the model's codes 0, 1, 2, ...
            values = as_model_frame(frame, [feature], {feature: model.levels[feature]})[feature]
            fig = _categorical_dependence(feature, values, contrib.values[feature].to_numpy())
            figures[f"shap_dependence_{feature}.png"] = figure_png(fig)
            continue
        shap.dependence_plot(feature, contrib.values.to_numpy(), X, interaction_index=None, show=False)
        plt.gcf().axes[0].set_ylabel(f"SHAP value of {feature} (log-odds)")
        figures[f"shap_dependence_{feature}.png"] = _pyplot_png(plt)

    groups = table.groupby("group")["mean_abs_shap"].sum()
    scores = group_scores(contrib.values, catalogue)
    fig = new_figure(7, 2.6)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(groups.index, groups.to_numpy(), color=["#ff7f0e" if g == "engagement" else "#1f77b4" for g in groups.index])
    ax1.set_ylabel("sum of mean |SHAP|")
    ax1.set_title("Importance by group")
    ax2.scatter(scores["fit_score"], scores["engagement_score"], s=4, alpha=0.3)
    ax2.set_xlabel("fit_score")
    ax2.set_ylabel("engagement_score")
    ax2.set_title("Fit vs engagement (log-odds)")
    figures["shap_groups.png"] = figure_png(fig)
    return figures


def _categorical_dependence(feature: str, values: pd.Series, shap_values: np.ndarray, max_categories: int = 25):
    """SHAP dependence of a categorical feature: one jittered strip per category (its name and
    row count on the axis, missing values as their own category), the median as a bar,
    categories ordered by median contribution; the ``max_categories`` most frequent shown."""
    from leadscore.reporting.report import new_figure

    labels = values.astype("object").where(values.notna(), "(missing)").astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    kept = list(counts.index[:max_categories])
    medians = {c: float(np.median(shap_values[labels == c])) for c in kept}
    order = sorted(kept, key=lambda c: medians[c])
    fig = new_figure(max(6.0, 0.55 * len(order) + 2.5), 4.6)
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for i, c in enumerate(order):
        v = shap_values[labels == c]
        ax.scatter(i + rng.uniform(-0.28, 0.28, len(v)), v, s=6, alpha=0.35, color="tab:blue", linewidths=0)
        ax.plot([i - 0.35, i + 0.35], [medians[c]] * 2, color="black", lw=2)
    ax.axhline(0, color="grey", lw=1)
    ticks = [f"{c} ({counts[c]:,})" for c in order]
    slanted = len(order) > 4 or max(len(t) for t in ticks) * len(order) > 60  # would overlap side by side
    ax.set_xticks(np.arange(len(order)), ticks, rotation=35 if slanted else 0, ha="right" if slanted else "center")
    more = f"; {len(counts) - len(kept)} rarer categories not shown" if len(counts) > len(kept) else ""
    ax.set(xlabel=f"{feature} (rows in the sample)", ylabel=f"SHAP value of {feature} (log-odds)",
           title=f"{feature}: contribution by category (black bar: median{more})")
    return fig


def _pyplot_png(plt) -> bytes:
    from leadscore.reporting.report import figure_png

    fig = plt.gcf()
    png = figure_png(fig)
    plt.close(fig)
    return png


# ---------------------------------------------------------------------------
# One lead, as of a moment: what `leadscore explain` shows
# ---------------------------------------------------------------------------

class UnknownLead(LookupError):
    """The lead id is not in the data, or the lead did not exist yet at as_of."""


def explain_lead(scorer, con, lead_id: str, as_of, k: int = 3, since=None) -> dict:
    """Everything about one lead's score as of a moment, JSON-serialisable: probabilities,
    tier, decision sentence, reasons in words, fit/engagement scores and grid, the rule
    baseline's points and fired rules, every contribution, the base value and the margin.
    ``since``: an earlier moment; adds ``since`` - the lead's score, probability and tier then
    and the change reasons (:func:`change_reasons`) from then to ``as_of``."""
    from leadscore.features.builder import features_as_of, open_leads
    from leadscore.modeling.baseline import score_baseline

    as_of = pd.Timestamp(as_of)
    known = con.execute("SELECT created_at::VARCHAR FROM leads WHERE lead_id = ?", [str(lead_id)]).fetchall()
    if not known:
        raise UnknownLead(f"lead_id {lead_id!r} is not in the leads table")
    pair = pd.DataFrame({"lead_id": [str(lead_id)], "as_of": [as_of]})
    contract = scorer.feature_config.contract
    frame = features_as_of(con, pair, config=scorer.feature_config)
    if frame.empty:
        raise UnknownLead(f"lead {lead_id!r} was created at {known[0][0]}, not before as_of {as_of}; "
                          "there is nothing to score yet")
    is_open = bool((open_leads(con, [as_of])["lead_id"] == str(lead_id)).any())
    out = explanation_of(scorer, frame, k)
    out.update(lead_id=str(lead_id), as_of=as_of.isoformat(), open=is_open)
    if since is not None:
        since = pd.Timestamp(since)
        if since >= as_of:
            raise ValueError(f"since ({since.isoformat()}) must be before as_of ({as_of.isoformat()})")
        then = features_as_of(con, pair.assign(as_of=since), config=scorer.feature_config)
        if then.empty:
            out["since"] = {"as_of": since.isoformat(), "created_later": True}
        else:
            before, _ = explain_rows(scorer, then, k)
            moved = change_reasons(scorer, then, frame, k).iloc[0]
            b = before.iloc[0]
            out["since"] = {"as_of": since.isoformat(), "score": int(b["score"]), "tier": str(b["tier"]),
                            scorer.probability: float(b[scorer.probability]),
                            "margin_before": float(moved["margin_before"]), "margin_after": float(moved["margin_after"]),
                            "change_reasons": moved["change_reasons"]}
    if scorer.rules is not None:
        out["baseline"] = baseline_summary(score_baseline(con, scorer.rules, pair, contract=contract).iloc[0])
    return out


def baseline_summary(b: pd.Series) -> dict:
    """A lead's rule-baseline row (``score_baseline`` / ``score_flat_baseline``), JSON-serialisable."""
    return {"points": float(b["total_points"]), "fit_points": float(b["fit_points"]),
            "engagement_points": float(b["engagement_points"]), "tier": str(b["baseline_tier"]),
            "grid": str(b["grid"]), "fired_rules": [r for r in str(b["fired_rules"]).split("; ") if r]}


def explanation_of(scorer, frame: pd.DataFrame, k: int = 3) -> dict:
    """The explanation of one feature row (``frame``: lead_id, as_of and the features), JSON-
    serialisable: probabilities, tier, decision, reasons, fit/engagement, every contribution."""
    row, contrib = explain_rows(scorer, frame, k)
    r = row.iloc[0]
    probabilities = {c: None if pd.isna(r[c]) else float(r[c]) for c in scorer.probability_columns.values()}
    out = {
        "lead_id": str(r["lead_id"]), "as_of": pd.Timestamp(r["as_of"]).isoformat(), "open": True,
        **probabilities, "probabilities": probabilities,
        "primary_label": scorer.primary, "probability": scorer.probability,
        "score": int(r["score"]), "tier": str(r["tier"]),
        "cutoffs": {"mql": scorer.cutoffs.mql, "sql": scorer.cutoffs.sql},
        "decision": str(r["decision"]),
        "reasons_positive": r["reasons_positive"], "reasons_negative": r["reasons_negative"],
        "fit_score": float(r["fit_score"]), "engagement_score": float(r["engagement_score"]),
        "grid": None if r["grid"] is None else str(r["grid"]),
        "margin": float(r["margin"]), "base": float(r["base"]), "p_uncalibrated": float(r["p_uncalibrated"]),
        "explanation_scale": MARGIN_NOTE, "reasons_note": REASONS_NOTE,
        "contributions": {f: float(v) for f, v in contrib.values.iloc[0].items()},
        "values": {f: _plain(v) for f, v in frame[scorer.features].iloc[0].items()},
    }
    for name, other in scorer.models.items():  # the other label's model, contributions alike
        if name != scorer.primary:
            c = contributions(other, frame)
            out[name] = {"margin": float(c.margin[0]), "base": float(c.base[0]),
                         "contributions": {f: float(v) for f, v in c.values.iloc[0].items()}}
    return out


def explanation_text(e: dict) -> str:
    """The human-readable form of :func:`explain_lead`'s result."""
    lines = [f"lead {e['lead_id']} as of {e['as_of']}" + ("" if e["open"] else " (not open at that moment: "
                                                                              "already an SQL or closed)"),
             e["decision"], "",
             REASONS_NOTE, "",
             ", ".join([f"{name} {p:.4f}" + (f" (score {e['score']}/99)" if name == e["probability"] else "")
                        for name, p in e["probabilities"].items() if p is not None]),
             f"model margin {e['margin']:+.3f} log-odds = base {e['base']:+.3f} + contributions "
             f"{e['margin'] - e['base']:+.3f}; uncalibrated p {e['p_uncalibrated']:.4f}, calibrated "
             f"{e['probability']} {e[e['probability']]:.4f}",
             f"fit_score {e['fit_score']:+.3f}, engagement_score {e['engagement_score']:+.3f}"
             + (f", grid {e['grid']}" if e["grid"] else ""), "", "reasons for:"]
    lines += [f"  + {reason_text(r)}" for r in e["reasons_positive"]] or ["  (none)"]
    lines += ["reasons against:"]
    lines += [f"  - {reason_text(r)}" for r in e["reasons_negative"]] or ["  (none)"]
    if "since" in e:
        s = e["since"]
        if s.get("created_later"):
            lines += ["", f"since {s['as_of']}: the lead did not exist yet"]
        else:
            p = e["probability"]
            lines += ["", f"since {s['as_of']}: score {s['score']} -> {e['score']}, tier {s['tier']} -> {e['tier']}, "
                          f"{p} {s[p]:.4f} -> {e[p]:.4f}, margin {s['margin_before']:+.3f} -> {s['margin_after']:+.3f} "
                          f"({s['margin_after'] - s['margin_before']:+.3f})", "what changed:"]
            lines += [f"  {reason_text(r)}" for r in s["change_reasons"]] or [
                f"  (no signal moved by {MIN_CONTRIBUTION} log-odds or more)"]
            lines += [CHANGE_NOTE]
    if "history" in e:
        lines += ["", f"history: {e['history']['trend']}"]
    if "baseline" in e:
        b = e["baseline"]
        lines += ["", f"rule baseline: {b['points']:.0f} points -> {b['tier']}, grid {b['grid']}",
                  *(f"  {rule}" for rule in b["fired_rules"] or ["(no rule fired)"])]
    lines += ["", MARGIN_NOTE]
    return "\n".join(lines)

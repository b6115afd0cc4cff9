"""A request's feature rows scored on arrays: what ``leadscore serve`` answers with.

An MLflow-style JSON request (``dataframe_split`` or ``dataframe_records``) is read straight
into one array per column - no DataFrame - and checked as the batch path checks a frame (the
same errors, naming column and rows): a numeric feature takes numbers (finite) or null, a
categorical one text or null, ``as_of`` an ISO 8601 timestamp (naive means UTC); JSON's
``true``, a number where a category is expected or a category where a number is would
otherwise score as missing, silently. The rows are then scored by
:func:`leadscore.serving.explain.explain_matrices` - the code batch scoring goes through - from
model matrices made of the arrays with look-up tables built once per scorer
(:class:`RequestPlan`). The answer equals :meth:`leadscore.serving.scorer.Scorer.score` of the
same rows as a frame, value for value (``tests/test_request.py``).

Per request this leaves the models' own work (two LightGBM predictions and exact TreeSHAP of a
few rows: well under a millisecond) and the reasons' words; the DataFrame round trips it
replaces cost about 100 ms per single-lead request (``benchmarks/bench_one_lead.py``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from leadscore.modeling.families import TreeMargin
from leadscore.modeling.model import OTHER
from leadscore.serving.columns import BASELINE_COLUMNS
from leadscore.serving.explain import ExplainTables, explain_matrices
from leadscore.serving.scorer import ScoringInputError, as_of_utc, rows_named


class RequestError(Exception):
    """A request that cannot be read: the HTTP status, MLflow's error code and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad_request(message: str) -> RequestError:
    return RequestError(400, "BAD_REQUEST", message)


def _invalid(message: str) -> RequestError:
    return RequestError(400, "INVALID_PARAMETER_VALUE", message)


@dataclass
class RequestRows:
    """A request's rows as columns: each value as JSON gave it (``raw``), and the scorer's
    features typed (``features``: float64 for numbers, objects - text or None - for categories)."""

    n: int
    raw: dict[str, list]
    features: dict[str, np.ndarray]
    as_of: list[str] | None = None   # the rows' as_of as the answer gives it (:func:`as_of_texts`)


def read_columns(body: bytes, max_rows: int) -> tuple[int, dict[str, list]]:
    """(rows, column -> values) of an MLflow-style JSON request; :class:`RequestError` names the problem."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad_request(f"the body is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not ({"dataframe_split", "dataframe_records"} & set(doc)):
        raise _bad_request("send {\"dataframe_split\": {\"columns\": [...], \"data\": [[...]]}} "
                           "or {\"dataframe_records\": [{...}]}")
    if "dataframe_split" in doc:
        split = doc["dataframe_split"]
        if not isinstance(split, dict):
            raise _bad_request("cannot read the rows: dataframe_split must be an object with columns and data")
        rows, names = split.get("data") or [], split.get("columns") or []
        if not isinstance(rows, list) or not isinstance(names, list):
            raise _bad_request("cannot read the rows: dataframe_split's columns and data must be lists")
        _at_most(len(rows), max_rows)
        twice = list(dict.fromkeys(str(c) for i, c in enumerate(names) if c in names[:i]))
        if twice:
            raise _bad_request(f"column(s) {', '.join(twice)} given more than once")
        short = [i for i, row in enumerate(rows) if not isinstance(row, list) or len(row) != len(names)]
        if short:
            raise _bad_request(f"cannot read the rows: {rows_named(np.isin(np.arange(len(rows)), short))} "
                               f"do not have one value for each of the {len(names)} columns")
        return len(rows), {c: [row[i] for row in rows] for i, c in enumerate(names)}
    records = doc["dataframe_records"]
    if not isinstance(records, list):
        raise _bad_request("cannot read the rows: dataframe_records must be a list of objects")
    _at_most(len(records), max_rows)
    if not all(isinstance(r, dict) for r in records):
        raise _bad_request("cannot read the rows: every record of dataframe_records must be an object")
    names = dict.fromkeys(c for r in records for c in r)
    return len(records), {c: [r.get(c) for r in records] for c in names}


def _at_most(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise RequestError(413, "REQUEST_TOO_LARGE", f"{rows:,} rows in one request; at most {max_rows:,}")


def _mask(values: list, bad) -> np.ndarray:
    return np.fromiter((bad(v) for v in values), dtype=bool, count=len(values))


def _not_text(v) -> bool:
    return v is not None and not isinstance(v, str) and not (isinstance(v, float) and math.isnan(v))


def _not_number(v) -> bool:
    return v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))


def _number(v) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except OverflowError:   # an integer beyond float64: no count, age or amount
        return math.inf if v > 0 else -math.inf


class RequestPlan:
    """What scoring requests with ``scorer`` needs, prepared once: which features are numbers
    and which categories, and per LightGBM model where each feature goes in its input matrix
    and each category's code (a model of another family gets its matrix as in batch scoring)."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.features = list(scorer.features)
        self.categorical = scorer.categorical
        self.numeric = [f for f in self.features if f not in self.categorical]
        self.codes = {name: self._coder(model) for name, model in scorer.models.items()}
        self.tables = ExplainTables.of(scorer)

    @staticmethod
    def _coder(model) -> dict[str, tuple[dict, float]] | None:
        """category -> code (and the code of a category never seen, NaN unless rare ones are
        pooled) per categorical feature of a LightGBM model whose codes are its booster's;
        None for any other model."""
        if not isinstance(model.core, TreeMargin):
            return None
        categorical = [f for f in model.features if f in model.levels]
        if [list(model.levels[f]) for f in categorical] != [list(c) for c in model.booster.pandas_categorical or []]:
            return None   # LightGBM converts such a frame itself (lightgbm_matrix)
        return {f: ({level: float(i) for i, level in enumerate(model.levels[f])},
                    float(model.levels[f].index(OTHER)) if OTHER in model.levels[f] else math.nan)
                for f in categorical}

    def warm_up(self) -> None:
        """Score one row of missing values, so that the first request does not pay for loading
        what the models and the reasons run on (compiled TreeSHAP kernels, LightGBM's buffers)."""
        row = {c: None for c in self.features}
        row.update(lead_id="warm-up", as_of="2025-01-01T00:00:00")
        self.score(self.read(json.dumps({"dataframe_records": [row]}).encode(), 1))

    def read(self, body: bytes, max_rows: int) -> RequestRows:
        """The request's rows, typed and checked; :class:`RequestError` (400 naming column and
        rows, or 413) when they cannot be scored."""
        n, raw = read_columns(body, max_rows)
        features, as_of = self._plain_features(n, raw), None
        for col in self.features:
            if col in features:
                continue
            if col not in raw:
                continue   # named below with every other missing column
            values = raw[col]
            if col in self.categorical:
                bad = _mask(values, _not_text)
                if bad.any():
                    raise _invalid(f"feature {col!r} is a category: give text or null, got "
                                   f"{values[int(np.argmax(bad))]!r} in {rows_named(bad)}")
                features[col] = np.array([v if isinstance(v, str) else None for v in values], dtype=object)
            else:
                bad = _mask(values, _not_number)
                if bad.any():
                    raise _invalid(f"feature {col!r} is numeric: give a number or null, got "
                                   f"{values[int(np.argmax(bad))]!r} in {rows_named(bad)}")
                features[col] = np.fromiter((_number(v) for v in values), dtype="float64", count=n)
        try:
            if "as_of" in raw:
                as_of = as_of_texts(raw["as_of"])
            for ratio in self.scorer.derivable_ratios(raw):   # as Scorer.prepare adds them to a frame
                parts = {c: pd.Series(features.get(c, raw[c])) for c in (ratio.numerator, ratio.denominator)}
                features[ratio.name] = ratio.compute(parts).to_numpy(dtype="float64")
                raw[ratio.name] = features[ratio.name].tolist()
            self._check(n, raw, features)
        except ScoringInputError as exc:
            raise _invalid(str(exc)) from None
        return RequestRows(n, raw, features, as_of)

    def _plain_features(self, n: int, raw: dict) -> dict[str, np.ndarray]:
        """The features of the common request typed at once: every number an int, a float or
        null, every category text or null (the others are typed - or refused - one by one)."""
        out = {}
        numeric = [c for c in self.numeric if c in raw]
        values = [raw[c] for c in numeric]
        if values and set(map(type, itertools.chain.from_iterable(values))) <= {int, float, type(None)}:
            try:
                out.update(zip(numeric, np.array(values, dtype="float64").reshape(len(numeric), n)))
            except OverflowError:   # an integer beyond float64: one by one
                pass
        categorical = [c for c in self.features if c in self.categorical and c in raw]
        texts = [raw[c] for c in categorical]
        if texts and set(map(type, itertools.chain.from_iterable(texts))) <= {str, type(None)}:
            out.update((c, np.array(t, dtype=object)) for c, t in zip(categorical, texts))
        return out

    def _check(self, n: int, raw: dict, features: dict) -> None:
        """What :meth:`leadscore.serving.scorer.Scorer.check_input` refuses in a frame."""
        self.scorer.check_columns(n, raw)
        if not np.isinf(np.concatenate([features[col] for col in self.numeric] or [np.zeros(0)])).any():
            return
        for col in self.numeric:   # the first column with an infinity, named
            infinite = np.isinf(features[col])
            if infinite.any():
                raise self.scorer.not_finite(col, float(features[col][infinite][0]), infinite)

    def matrices(self, rows: RequestRows) -> dict[str, np.ndarray | pd.DataFrame]:
        """Each model's input matrix of the rows, by label (:meth:`Scorer.matrices` of a frame)."""
        out, frame = {}, None
        for name, model in self.scorer.models.items():
            coder = self.codes[name]
            if coder is None:
                frame = pd.DataFrame(rows.features) if frame is None else frame
                out[name] = model.matrix(frame)
                continue
            X = np.empty((rows.n, len(model.features)))
            for j, f in enumerate(model.features):
                if f in coder:
                    code, unseen = coder[f]
                    X[:, j] = [math.nan if v is None else code.get(v, unseen) for v in rows.features[f]]
                else:
                    X[:, j] = rows.features[f]
            out[name] = X
        return out

    def score(self, rows: RequestRows, k: int = 3) -> list[dict]:
        """One JSON-ready record per row, in order: the columns :meth:`Scorer.score` returns
        (lead_id, as_of as ``%Y-%m-%dT%H:%M:%S%z`` in UTC, the probabilities - null without a
        model - score, tier, fit_score, engagement_score, grid, reasons, and baseline_points /
        baseline_tier when the rows carry them)."""
        scorer = self.scorer
        primary = scorer.primary_model
        e = explain_matrices(scorer, self.matrices(rows), {f: rows.features[f] for f in primary.features}, k,
                             tables=self.tables)
        columns = {
            "lead_id": _ids(rows.raw["lead_id"]),
            "as_of": rows.as_of,
            **{c: _floats(p) for c, p in e.probabilities.items()},
            "score": e.score.tolist(), "tier": e.tier.tolist(),
            "fit_score": _floats(e.fit_score), "engagement_score": _floats(e.engagement_score),
            "grid": [None] * rows.n if e.grid is None else e.grid.tolist(),
            "reasons": e.ranked.lines(),
        }
        order = [*scorer.output_columns, *(c for c in BASELINE_COLUMNS if c in rows.raw)]
        for col in order[len(scorer.output_columns):]:
            columns[col] = _plain(pd.Series(rows.raw[col]).to_numpy())
        return [dict(zip(order, values)) for values in zip(*(columns[c] for c in order))]


# The ISO 8601 forms read without pandas: a date (years 1900-2199), or a date, "T" or a space and
# a time to the minute, second or microsecond, with Z or an offset or neither - which Python's
# datetime reads as pandas does (tested); any other text goes through pandas, which names the
# rows it cannot read.
_PLAIN_ISO = re.compile(r"(?:19|20|21)\d\d-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d:\d\d)?)?")
AS_OF_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def as_of_texts(values: list) -> list[str]:
    """The rows' ``as_of`` as the answer gives it: UTC, ``%Y-%m-%dT%H:%M:%S%z`` - read as
    :func:`leadscore.serving.scorer.as_of_utc` reads it (naive means UTC), which names the
    rows that are no timestamp."""
    if all(isinstance(v, str) and _PLAIN_ISO.fullmatch(v) for v in values):
        try:
            moments = [datetime.fromisoformat(v) for v in values]
        except ValueError:   # a day or hour out of range: as_of_utc names the row
            moments = None
        if moments is not None:
            return [(m.replace(tzinfo=timezone.utc) if m.tzinfo is None else m.astimezone(timezone.utc)).strftime(
                AS_OF_FORMAT) for m in moments]
    return as_of_utc(pd.Series(values, dtype=object)).dt.strftime(AS_OF_FORMAT).tolist()


def _ids(values: list) -> list:
    """lead_id as text, as a frame's ``astype("str")`` makes it (numbers as the column's dtype
    reads them: 1 beside a 2.5 or a null is "1.0"; missing stays missing)."""
    if all(isinstance(v, str) for v in values):
        return list(values)
    return _plain(pd.Series(values).astype("str").to_numpy())


def _floats(values: np.ndarray) -> list:
    return [None if math.isnan(v) else v for v in values.tolist()]


def _plain(values: np.ndarray) -> list:
    """JSON's values: Python scalars, null for a missing one (a list stays a list)."""
    return [None if pd.api.types.is_scalar(v) and pd.isna(v) else (v.item() if isinstance(v, np.generic) else v)
            for v in values]

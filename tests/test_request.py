"""A served request is read and scored on arrays (leadscore.serving.request), and its answer is
exactly what the batch path - Scorer.score of the same rows as a frame - gives, for a LightGBM
model on event data and for the flat export's model (X Education: another family, derived
ratio columns); bad requests are refused naming column and rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.features.builder import features_as_of
from leadscore.serving.registry import load_scorer
from leadscore.serving.request import RequestError, RequestPlan
from leadscore.training.config import load_pipeline
from leadscore.training.flat import load_config, load_flat
from leadscore.training.flat_pipeline import scoring_rows


@pytest.fixture(scope="module", params=["events", "flat"])
def served(request, train_dir):
    """(scorer, its request plan, feature rows to send: a few hundred, with nulls and unseen categories)."""
    if request.param == "events":
        pipeline = load_pipeline(request.getfixturevalue("trained")[0])
        scorer, _ = load_scorer(f"{pipeline.models_dir}/{pipeline.name}")
        rows = features_as_of({n: train_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")},
                              as_of="2025-06-01", config=pipeline.features)
    else:
        dataset = load_config(request.getfixturevalue("flat_trained")[0])
        scorer, _ = load_scorer(f"{dataset.models_dir}/{dataset.bundle_name}")
        rows = scoring_rows(load_flat(dataset, scoring=True), pd.Timestamp("2025-06-01", tz="UTC"))
    rows = rows[["lead_id", "as_of", *scorer.features]].sample(300, random_state=1).reset_index(drop=True)
    rng = np.random.default_rng(0)
    categorical = {c for m in scorer.models.values() for c in m.levels}
    for col in scorer.features:   # what a CRM sends: gaps, and categories the model never saw
        values = rows[col].astype(object)
        values[rng.random(len(rows)) < 0.05] = None
        if col in categorical:
            values[rng.random(len(rows)) < 0.05] = "never seen in training"
        rows[col] = values.where(values.notna(), None) if col in categorical else pd.to_numeric(values)
    return scorer, RequestPlan(scorer), rows


def _as_sent(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows as JSON carries them: as_of as zone-naive ISO text (MLflow's form), nulls as null."""
    return rows.assign(as_of=rows["as_of"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S"))


def _split(rows: pd.DataFrame) -> dict:
    """dataframe_split of the rows, every float exact (pandas' to_json keeps 10 digits)."""
    sent = _as_sent(rows).astype(object)
    sent = sent.where(sent.notna(), None)
    return {"columns": list(sent.columns),
            "data": [[v.item() if isinstance(v, np.generic) else v for v in row] for row in sent.to_numpy().tolist()]}


def _body(rows: pd.DataFrame, form: str) -> bytes:
    sent = _split(rows)
    if form == "split":
        return json.dumps({"dataframe_split": sent}).encode()
    return json.dumps({"dataframe_records": [dict(zip(sent["columns"], row)) for row in sent["data"]]}).encode()


def _batch_answer(scorer, rows: pd.DataFrame) -> list[dict]:
    """Scorer.score of the rows as a frame, in the JSON form the server answers with."""
    scored = scorer.score(rows)
    scored = scored.assign(as_of=scored["as_of"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%z"))
    plain = scored.astype(object).where(scored.notna(), None)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in plain.to_dict(orient="records")]


def _same(served: list[dict], batch: list[dict]) -> None:
    assert len(served) == len(batch)
    for got, want in zip(served, batch):
        assert list(got) == list(want)
        for key in want:   # floats to the last bit: the same arithmetic on the same values
            assert got[key] == want[key] or (isinstance(want[key], float) and math.isnan(want[key])
                                             and math.isnan(got[key])), (key, got, want)


@pytest.mark.parametrize("form", ["split", "records"])
def test_a_request_of_many_rows_answers_what_batch_scoring_gives(served, form):
    scorer, plan, rows = served
    answer = plan.score(plan.read(_body(rows, form), max_rows=1000))
    _same(answer, _batch_answer(scorer, rows))
    assert {a["tier"] for a in answer} >= {"lead"} and any(a["reasons"] for a in answer)


def test_single_lead_requests_answer_what_batch_scoring_gives(served):
    """Each lead alone gets what it gets among all the others: a row's answer - its reasons'
    words too, which are written once per distinct value in a batch - depends on it alone."""
    scorer, plan, rows = served
    batch = _batch_answer(scorer, rows)
    for i in range(40):
        one = rows.iloc[[i]].reset_index(drop=True)
        _same(plan.score(plan.read(_body(one, "split"), max_rows=1)), batch[i:i + 1])
        assert _batch_answer(scorer, one) == batch[i:i + 1]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_subset_of_rows_and_columns_order_scores_alike(served, data):
    """Whatever rows, in whatever column order, with whatever extra columns and baseline
    columns beside them: the same answer as the batch path."""
    scorer, plan, rows = served
    picked = data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=12))
    frame = rows.iloc[picked].reset_index(drop=True)
    order = data.draw(st.permutations(list(frame.columns)))
    frame = frame[order]
    if data.draw(st.booleans()):
        frame = frame.assign(baseline_points=np.arange(len(frame), dtype="float64") * 1.5,
                             baseline_tier=["MQL", "lead"] * (len(frame) // 2) + ["SQL"] * (len(frame) % 2),
                             unused_column="ignored")
    form = data.draw(st.sampled_from(["split", "records"]))
    _same(plan.score(plan.read(_body(frame, form), max_rows=50)), _batch_answer(scorer, frame))


def test_derived_ratios_are_computed_when_the_request_lacks_them(served):
    scorer, plan, rows = served
    if not scorer.ratios:
        pytest.skip("this model reads no derived ratio")
    without = rows.drop(columns=[r.name for r in scorer.ratios]).head(40)
    _same(plan.score(plan.read(_body(without, "records"), max_rows=50)), _batch_answer(scorer, without))


@pytest.mark.parametrize("form", ["2025-06-01", "2025-06-01T00:00:00Z", "2025-06-01T02:00:00+02:00", "2025-06-01 00:00",
                                  "2025-05-31T21:30:00.123456-02:30", "2025-06-01T00:00:00.5", "20250601T000000"])
def test_as_of_in_any_iso_form_reads_as_pandas_reads_it(served, form):
    scorer, plan, rows = served
    sent = _split(rows.head(2))
    for row in sent["data"]:
        row[sent["columns"].index("as_of")] = form
    answer = plan.score(plan.read(json.dumps({"dataframe_split": sent}).encode(), max_rows=5))
    want = pd.to_datetime(pd.Series([form] * 2), utc=True, format="ISO8601").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    assert [a["as_of"] for a in answer] == want.tolist()


def test_numeric_lead_ids_and_listed_baseline_values_come_back_as_a_frame_gives_them(served):
    """JSON's 1 beside a 2.5 or a null reads as a frame reads it (1.0 - lead_id is text: "1.0"),
    and a value passed through (baseline) that is a list stays a list."""
    scorer, plan, rows = served
    frame = rows.head(3).assign(lead_id=[1.0, np.nan, 2.5], baseline_tier=["lead", "MQL", "SQL"])
    sent = _split(frame)
    sent["data"][0][sent["columns"].index("lead_id")] = 1   # an int, as a CRM's JSON has it
    answer = plan.score(plan.read(json.dumps({"dataframe_split": sent}).encode(), max_rows=5))
    _same(answer, _batch_answer(scorer, frame))
    assert [a["lead_id"] for a in answer] == ["1.0", None, "2.5"]
    records = [dict(zip(sent["columns"], row)) for row in sent["data"]]
    records[1]["baseline_points"] = [1, 2]
    answer = plan.score(plan.read(json.dumps({"dataframe_records": records}).encode(), max_rows=5))
    assert answer[1]["baseline_points"] == [1, 2] and answer[0]["baseline_points"] is None


def _edited(rows: pd.DataFrame, edit) -> bytes:
    sent = _split(rows.head(5))
    edit(sent["columns"], sent["data"])
    return json.dumps({"dataframe_split": sent}).replace(
        '"__inf__"', "1e400").encode()


def _set(column, row, value):
    def edit(columns, data):
        data[row][columns.index(column)] = value
    return edit


def test_bad_requests_are_refused_naming_what_and_where(served):
    scorer, plan, rows = served
    categorical = {c for m in scorer.models.values() for c in m.levels}
    number = next(f for f in scorer.features if f not in categorical)
    category = next(f for f in scorer.features if f in categorical)
    cases = [
        (_edited(rows, _set(number, 1, "__inf__")), 400, f"feature {number!r} must be a finite number, got inf in row(s) [1]"),
        (_edited(rows, _set(number, 2, True)), 400, f"feature {number!r} is numeric: give a number or null, got True in row(s) [2]"),
        (_edited(rows, _set(number, 4, "12")), 400, f"feature {number!r} is numeric: give a number or null, got '12' in row(s) [4]"),
        (_edited(rows, _set(category, 0, 5)), 400, f"feature {category!r} is a category: give text or null, got 5 in row(s) [0]"),
        (_edited(rows, lambda c, d: c.__setitem__(c.index(number), category)), 400, f"column(s) {category} given more than once"),
        (_edited(rows, _set("as_of", 3, "yesterday")), 400, "got 'yesterday' in row(s) [3]"),
        (_edited(rows, _set("as_of", 1, "2025-01-01+05:00")), 400, "got '2025-01-01+05:00' in row(s) [1]"),
        (_edited(rows, _set("as_of", 2, "2025-01-01X05:00")), 400, "got '2025-01-01X05:00' in row(s) [2]"),
        (_edited(rows, lambda c, d: d[2].pop()), 400, "row(s) [2] do not have one value for each of the"),
        (_edited(rows, lambda c, d: [r.pop(c.index("lead_id")) for r in d] and c.remove("lead_id")), 400,
         "feature rows lack column(s) lead_id;"),
        (json.dumps({"dataframe_records": []}).encode(), 400, "no rows to score"),
        (json.dumps({"dataframe_records": [1, 2]}).encode(), 400, "every record of dataframe_records must be an object"),
        (json.dumps({"dataframe_records": [{}] * 6}).encode(), 413, "6 rows in one request; at most 5"),
        (json.dumps({"rows": []}).encode(), 400, "send {\"dataframe_split\""),
        (b"{nope", 400, "the body is not JSON"),
    ]
    for body, status, says in cases:
        with pytest.raises(RequestError) as caught:
            plan.read(body, max_rows=5)
        assert (caught.value.status, says) == (status, says) and says in caught.value.message, caught.value.message

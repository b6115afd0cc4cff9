"""``leadscore serve``: the registered model behind an API key and request limits.

MLflow's scoring server (``mlflow models serve``) has no authentication, no request size limit,
and runs the registry copy's code unchecked. This small FastAPI app serves the same scorer -
the same :meth:`leadscore.serving.scorer.Scorer.score` the pyfunc model and the batch job call - loaded
by leadscore's verified loader, and speaks MLflow's protocol (``POST /invocations`` with
``dataframe_split`` or ``dataframe_records``; ``{"predictions": [...]}`` back; ``GET /ping``):

* **API key**: with ``LEADSCORE_API_KEY`` set, every request but ``/ping`` needs
  ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (401 otherwise, compared in constant
  time). Without a key it binds only to loopback unless told otherwise.
* **Limits**: a body over ``max_bytes`` (checked from ``Content-Length`` and while reading) or a
  batch over ``max_rows`` is refused with 413 before any scoring.
* **Errors** name the problem (400 for bad input - a value of the wrong type, an infinity, a
  column twice, an as_of that is no timestamp - naming column and rows; 413; 401) and never
  carry a stack trace; an unexpected failure is 500 with its type, logged on the server.
* **One batch at a time**, scored in a worker thread: ``/ping`` answers while a batch is scored.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from leadscore.serving.scorer import as_of_utc, rows_named

API_KEY = "LEADSCORE_API_KEY"
log = logging.getLogger("leadscore.serving.server")


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_request(body: bytes, max_rows: int) -> pd.DataFrame:
    """The feature rows of an MLflow-style JSON request; :class:`RequestError` names the problem."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "BAD_REQUEST", f"the body is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not ({"dataframe_split", "dataframe_records"} & set(doc)):
        raise RequestError(400, "BAD_REQUEST", "send {\"dataframe_split\": {\"columns\": [...], \"data\": [[...]]}} "
                                               "or {\"dataframe_records\": [{...}]}")
    try:
        if "dataframe_split" in doc:
            split = doc["dataframe_split"]
            rows = split.get("data") or []
            if len(rows) > max_rows:
                raise RequestError(413, "REQUEST_TOO_LARGE", f"{len(rows):,} rows in one request; at most {max_rows:,}")
            frame = pd.DataFrame(rows, columns=split.get("columns"))
        else:
            records = doc["dataframe_records"]
            if len(records) > max_rows:
                raise RequestError(413, "REQUEST_TOO_LARGE",
                                   f"{len(records):,} rows in one request; at most {max_rows:,}")
            frame = pd.DataFrame.from_records(records)
    except RequestError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise RequestError(400, "BAD_REQUEST", f"cannot read the rows: {exc}") from None
    return frame


def _shown(value):
    return value.item() if isinstance(value, np.generic) else value


def _typed(frame: pd.DataFrame, scorer) -> pd.DataFrame:
    """JSON's values as the scorer's types, or a 400 naming the column and rows: a numeric
    feature takes numbers (finite) or null and becomes float64; a categorical one text or null;
    ``as_of`` an ISO 8601 timestamp (naive means UTC, :func:`leadscore.serving.scorer.as_of_utc`).
    JSON's ``true``, a number where a category
    is expected or a category where a number is would otherwise score as missing, silently."""
    twice = frame.columns[frame.columns.duplicated()].unique().tolist()
    if twice:
        raise RequestError(400, "BAD_REQUEST", f"column(s) {', '.join(map(str, twice))} given more than once")
    categorical = {c for m in scorer.models.values() for c in m.levels}
    out = {}
    for col in scorer.features:
        if col not in frame:
            continue  # the scorer names the missing columns
        values = frame[col]
        if col in categorical:
            bad = values.map(lambda v: v is not None and not isinstance(v, str)
                             and not (isinstance(v, float) and np.isnan(v))).to_numpy(dtype=bool)
            if bad.any():
                raise RequestError(400, "INVALID_PARAMETER_VALUE", f"feature {col!r} is a category: give text or null, "
                                   f"got {_shown(values[bad].iloc[0])!r} in {rows_named(bad)}")
            continue
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            bad = values.map(lambda v: v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))))
            bad = bad.to_numpy(dtype=bool)
            if bad.any():
                raise RequestError(400, "INVALID_PARAMETER_VALUE", f"feature {col!r} is numeric: give a number or "
                                   f"null, got {_shown(values[bad].iloc[0])!r} in {rows_named(bad)}")
            values = pd.to_numeric(values, errors="coerce")
        out[col] = values.astype("float64")  # infinities: the scorer refuses them
    if "as_of" in frame:
        out["as_of"] = as_of_utc(frame["as_of"])  # ScoringInputError (a 400) names the rows
    return frame.assign(**out) if out else frame


def create_app(scorer, max_rows: int = 10_000, max_bytes: int = 10_000_000, api_key: str | None = None):
    """The FastAPI app serving ``scorer``."""
    from leadscore.serving.scorer import ScoringInputError

    app = FastAPI(title="leadscore", docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    @app.get("/ping")
    def ping():
        return Response("\n", media_type="text/plain")

    lock = threading.Lock()

    def answer(body: bytes) -> JSONResponse:
        """Read, score (one request at a time: LightGBM and SHAP use both cores already) and
        answer; runs in a worker thread so that /ping answers while a batch is scored."""
        try:
            frame = _typed(parse_request(body, max_rows), scorer)
            with lock:
                scored = scorer.score(frame)
        except RequestError as exc:
            return error(exc.status, exc.code, exc.message)
        except ScoringInputError as exc:
            return error(400, "INVALID_PARAMETER_VALUE", str(exc))
        except Exception as exc:  # logged here, never sent as a stack trace
            log.exception("scoring failed")
            return error(500, "INTERNAL_ERROR", f"scoring failed: {type(exc).__name__}")
        scored = scored.assign(as_of=scored["as_of"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%z"))
        plain = scored.astype(object).where(scored.notna(), None)   # exact floats, null for missing
        records = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                   for row in plain.to_dict(orient="records")]
        return JSONResponse({"predictions": records})

    @app.post("/invocations")
    async def invocations(request: Request):
        if api_key is not None:
            auth = request.headers.get("authorization") or ""
            given = [request.headers.get("x-api-key") or "", auth[7:] if auth.lower().startswith("bearer ") else ""]
            if not any([hmac.compare_digest(g.encode(), api_key.encode()) for g in given]):  # both compared
                return error(401, "UNAUTHENTICATED", "missing or wrong API key (Authorization: Bearer <key>)")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return error(413, "REQUEST_TOO_LARGE", f"{int(length):,} bytes in one request; at most {max_bytes:,}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                return error(413, "REQUEST_TOO_LARGE", f"more than {max_bytes:,} bytes in one request")
        return await run_in_threadpool(answer, bytes(body))

    return app


def serve(scorer, host: str, port: int, max_rows: int, max_bytes: int, allow_unauthenticated: bool) -> None:
    import uvicorn

    key = os.environ.get(API_KEY) or None
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if key is None and not loopback and not allow_unauthenticated:
        raise ValueError(f"refusing to serve on {host} without an API key: set {API_KEY} (or bind to 127.0.0.1, "
                         "or pass --allow-unauthenticated behind your own gateway)")
    uvicorn.run(create_app(scorer, max_rows, max_bytes, key), host=host, port=port, log_level="warning",
                timeout_keep_alive=5)

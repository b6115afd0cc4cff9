"""``leadscore serve``: the registered model behind an API key and request limits.

MLflow's scoring server (``mlflow models serve``) has no authentication, no request size limit,
and runs the registry copy's code unchecked. This small FastAPI app serves the same scorer -
loaded by leadscore's verified loader, its answers those of :meth:`leadscore.serving.scorer.Scorer.score`
that the pyfunc model and the batch job call, computed on arrays without a DataFrame per request
(:mod:`leadscore.serving.request`) - and speaks MLflow's protocol (``POST /invocations`` with
``dataframe_split`` or ``dataframe_records``; ``{"predictions": [...]}`` back; ``GET /ping``):

* **API key**: with ``LEADSCORE_API_KEY`` set, every request but ``/ping`` needs
  ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (401 otherwise, compared in constant
  time). Without a key it binds only to loopback unless told otherwise.
* **Limits**: a body over ``max_bytes`` (checked from ``Content-Length`` and while reading) or a
  batch over ``max_rows`` is refused with 413 before any scoring.
* **Errors** name the problem (400 for bad input - a value of the wrong type, an infinity, a
  column twice, an as_of that is no timestamp - naming column and rows; 413; 401) and never
  carry a stack trace; an unexpected failure is 500 with its type, logged on the server.
* **One batch at a time** per process, scored in a worker thread: ``/ping`` answers while a
  batch is scored. ``workers`` processes (``leadscore serve --workers``) score that many at once.
"""

from __future__ import annotations

import hmac
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from leadscore.serving.request import RequestError, RequestPlan

API_KEY = "LEADSCORE_API_KEY"
log = logging.getLogger("leadscore.serving.server")


def create_app(scorer, max_rows: int = 10_000, max_bytes: int = 10_000_000, api_key: str | None = None):
    """The FastAPI app serving ``scorer``: requests read and scored on arrays
    (:mod:`leadscore.serving.request`), with the tables that takes built once, here."""
    from leadscore.serving.scorer import ScoringInputError

    plan = RequestPlan(scorer)
    plan.warm_up()
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
            rows = plan.read(body, max_rows)
            with lock:
                records = plan.score(rows)
        except RequestError as exc:
            return error(exc.status, exc.code, exc.message)
        except ScoringInputError as exc:
            return error(400, "INVALID_PARAMETER_VALUE", str(exc))
        except Exception as exc:  # logged here, never sent as a stack trace
            log.exception("scoring failed")
            return error(500, "INTERNAL_ERROR", f"scoring failed: {type(exc).__name__}")
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


BUNDLE = "LEADSCORE_SERVE_BUNDLE"   # what a worker process loads, and its limits (set by serve)
LIMITS = "LEADSCORE_SERVE_LIMITS"


def serve(scorer, host: str, port: int, max_rows: int, max_bytes: int, allow_unauthenticated: bool,
          workers: int = 1, bundle: str | None = None, manifest: dict | None = None) -> None:
    """Serve ``scorer`` in this process; with ``workers`` > 1, in that many worker processes
    (uvicorn's), each scoring its own requests - on a machine with as many cores, that many are
    scored at once. The workers read a private copy of the bundle directory ``bundle`` (whose
    ``manifest`` the scorer was read with), made here and removed at exit: every worker, one
    restarted too, serves that very model even if a retraining rewrites the bundle meanwhile."""
    import uvicorn

    key = os.environ.get(API_KEY) or None
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if key is None and not loopback and not allow_unauthenticated:
        raise ValueError(f"refusing to serve on {host} without an API key: set {API_KEY} (or bind to 127.0.0.1, "
                         "or pass --allow-unauthenticated behind your own gateway)")
    options = dict(host=host, port=port, log_level="warning", timeout_keep_alive=5)
    if workers <= 1:
        uvicorn.run(create_app(scorer, max_rows, max_bytes, key), **options)
        return
    if bundle is None or manifest is None:
        raise ValueError("serving with several workers needs the model's bundle directory and manifest")
    from leadscore.serving.bundle import verify_bundle

    with tempfile.TemporaryDirectory(prefix="leadscore-serve-") as private:
        copy = shutil.copytree(bundle, Path(private) / "bundle")
        if verify_bundle(copy) != manifest:
            raise ValueError(f"the bundle {bundle} changed while it was being loaded; start again")
        os.environ[BUNDLE], os.environ[LIMITS] = str(copy), f"{max_rows} {max_bytes}"
        uvicorn.run("leadscore.serving.server:worker_app", factory=True, workers=workers, **options)


def worker_app():
    """The app of one worker process of :func:`serve`: the bundle and limits its parent set."""
    from leadscore.serving.registry import load_scorer

    scorer, _ = load_scorer(os.environ[BUNDLE])
    max_rows, max_bytes = (int(v) for v in os.environ[LIMITS].split())
    return create_app(scorer, max_rows, max_bytes, os.environ.get(API_KEY) or None)

"""MLflow: runs, the pyfunc scorer, the registry and the ``champion`` alias.

The embedded SQLite store is the default (``sqlite:///mlflow.db`` and artifacts under
``mlartifacts/`` in the working directory, no server); any tracking URI works by config.
The pyfunc model carries the bundle directory as its artifact (the scorer as JSON, never a
pickle) and leadscore's code (``code/leadscore/*.py``, whose hashes the bundle's manifest
records); it is logged from code (``registered_model.py``), so no class is pickled into the
registry. leadscore's own commands never run the registry copy's code: :func:`load_scorer`
checks the model's files (the MLmodel points at our loader, no pickle, every code file as
recorded, nothing added), verifies the bundle (hashes, signature with ``LEADSCORE_SIGNING_KEY``,
the MLflow run that registered it) and reads the scorer with the installed leadscore.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from leadscore.serving.bundle import (
    SCORER_FILE,
    BundleError,
    code_files,
    load_bundle,
    sha256_file,
    verify_bundle,
)
from leadscore.settings import Section

CHAMPION, CHALLENGER = "champion", "challenger"
# The registered model is logged from code (that file sets a LeadScoreModel), not as a pickle,
MODEL_CODE = Path(__file__).with_name("registered_model.py")
MODEL_CODE_KEY = "serving/registered_model.py"  # its key among the manifest's code files
# ... and carries leadscore's code (its .py files), so an environment without leadscore
# installed can load it.
LEADSCORE_CODE = Path(__file__).parents[1]
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle", ".pyc")


class TrackingConfig(Section):
    """MLflow: the embedded SQLite store by default (paths relative to the working directory)."""

    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "leadscore"
    registered_model: str = "leadscore"
    enabled: bool = True


class LeadScoreModel(mlflow.pyfunc.PythonModel):
    """Feature rows (what ``leadscore features`` writes) in; the batch job's scoring columns
    out: lead_id, as_of, p_sql, p_won, score, tier, fit_score, engagement_score, grid, reasons
    (+ baseline_points / baseline_tier when the rows carry them). Unusable rows raise an
    ``MlflowException`` naming the problem, which the scoring server answers with HTTP 400."""

    def load_context(self, context):
        self.manifest, objects = load_bundle(context.artifacts["bundle"])
        self.scorer = objects[SCORER_FILE]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from leadscore.serving.scorer import ScoringInputError

        try:
            return self.scorer.score(model_input)
        except ScoringInputError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as exc:  # the server answers without a stack trace; the message names the failure
            raise MlflowException(f"scoring failed: {type(exc).__name__}: {exc}") from None


def configure(tracking: TrackingConfig) -> MlflowClient:
    """Point MLflow at the configured store; create the experiment (artifacts where configured)."""
    # MLflow draws a progress bar for every artifact copy; in a batch log it is noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking.tracking_uri)
    from leadscore.io import directory_lock

    # Two jobs starting on a fresh SQLite store would both create its schema (MLflow's migration
    # then fails in one of them): they take turns while the store and experiment are set up.
    sqlite = tracking.tracking_uri.startswith("sqlite:///")
    lock = (directory_lock(Path(tracking.tracking_uri[len("sqlite:///"):]).resolve().parent) if sqlite
            else contextlib.nullcontext())
    with lock:
        client = MlflowClient()
        if client.get_experiment_by_name(tracking.experiment) is None:
            location = tracking.artifact_location
            if "://" not in location:
                location = Path(location).resolve().as_uri()
            client.create_experiment(tracking.experiment, artifact_location=location)
        mlflow.set_experiment(tracking.experiment)
    return client


# What training, reports and the CLI need and the served model does not import (tests/test_serving
# loads the registered model with them blocked): left out of its requirements.
NOT_SERVED = frozenset({"shap", "matplotlib", "jinja2", "typer"})


def _requirements() -> list[str]:
    """leadscore's own dependencies (not its extras, not :data:`NOT_SERVED`), pinned at the installed versions: what MLflow
    installs when it rebuilds the model's environment (env_manager "virtualenv", "uv", "conda").
    leadscore itself travels in the model's ``code/`` (see :func:`leadscore.serving.bundle.code_files`)."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    needed = [Requirement(r) for r in requires("leadscore") or []]
    return [f"{r.name}=={version(r.name)}" for r in needed if r.marker is None and r.name not in NOT_SERVED]


def _json_artifact(obj, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(obj, indent=2, default=str))
        mlflow.log_artifact(str(path))


def log_model_version(tracking: TrackingConfig, bundle_dir: Path, input_example: pd.DataFrame,
                      output_example: pd.DataFrame):
    """Log the bundle as a pyfunc model in the active run and register it; returns the ModelVersion."""
    from mlflow.models import infer_signature

    example = _serialisable(input_example)
    # Counts and flags are declared double, not integer: MLflow widens int input to double but
    # refuses double input for an integer column, so feature rows from a warehouse's DOUBLE
    # columns, a CSV or JSON with "2.0" would fail schema enforcement. The model reads either.
    example = example.astype({c: "float64" for c in example.columns
                              if pd.api.types.is_integer_dtype(example[c]) or pd.api.types.is_bool_dtype(example[c])})
    with warnings.catch_warnings():
        # What is left integer is the output's score (1-99, never missing): MLflow's hint about
        # integer columns that cannot hold missing values does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        signature = infer_signature(example, _serialisable(output_example))
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "leadscore"   # the .py files the manifest hashed, no bytecode
        for rel in code_files():
            (code / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(LEADSCORE_CODE / rel, code / rel)
        info = mlflow.pyfunc.log_model(
            name="scorer", python_model=str(MODEL_CODE), artifacts={"bundle": str(bundle_dir)},
            signature=signature, input_example=example, code_paths=[str(code)],
            pip_requirements=_requirements(), registered_model_name=tracking.registered_model,
        )
    return MlflowClient().get_model_version(tracking.registered_model, str(info.registered_model_version))


def _serialisable(frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow schemas take naive datetimes; our timestamps are UTC, so drop the zone."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = out[col].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def champion_version(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None


def set_alias(client: MlflowClient, name: str, alias: str, version) -> None:
    client.set_registered_model_alias(name, alias, str(version))


def cutoff_metrics(cutoffs: pd.DataFrame) -> dict[str, float]:
    """The cutoffs' test-slice figures as metrics: ``cutoff_sql_new_leads_per_week``,
    ``cutoff_mql_conversion_rate_low``, ... (finite values only)."""
    out = {}
    for _, row in cutoffs.iterrows():
        for col, value in row.items():
            if col not in ("cutoff", "policy") and isinstance(value, (int, float)) and np.isfinite(value):
                out[f"cutoff_{str(row['cutoff']).lower()}_{col}"] = float(value)
    return out


def run_description(run) -> str:
    """The run's description (MLflow's note, shown on the run page): what was trained, on what,
    how it did out of time, and its cutoffs."""
    p, m, label = run.params, run.metrics, run.primary
    auc = m.get(f"{label.short}_auc", float("nan"))
    cut = {r["cutoff"]: r for _, r in run.cutoffs.iterrows()}
    lines = [f"**{p.get('candidate', 'model')}** for `{label.name}` ({label.probability}) - {p.get('model_description', '')}",
             f"Fitted on examples as of {p['train_from']} .. {p['train_until']}, calibrated on {p['calibration_from']} .. "
             f"{p['calibration_until']}; outcomes observed until {p['observed_until'][:10]}.",
             f"Newest fold, out of time: AUC {auc:.4f}, ECE {m.get(f'{label.short}_ece', float('nan')):.4f}.",
             f"Cutoffs ({p.get('cutoff_policy')}): MQL {label.probability} >= {p['mql_cutoff']:.4g}, SQL >= "
             f"{p['sql_cutoff']:.4g}" + "".join(
                 f"; {name} in the newest fold: {r['new_leads_per_week']:,.0f} new leads/week converting at "
                 f"{r['conversion_rate']:.1%}" for name, r in cut.items() if np.isfinite(r["new_leads_per_week"])) + "."]
    if run.suspected_leakage:
        lines.append(f"Suspected leakage: {', '.join(run.suspected_leakage)}.")
    return "\n\n".join(lines)


def log_datasets(frames: dict[str, pd.DataFrame], source: str, target: str) -> None:
    """Each frame as an MLflow dataset input of the active run (its schema, digest and source;
    not the rows): context ``training``, ``calibration``, ``test``."""
    from mlflow.data.sources import LocalArtifactDatasetSource

    for context, frame in frames.items():
        if frame is None or frame.empty:
            continue
        dataset = mlflow.data.from_pandas(_serialisable(frame), source=LocalArtifactDatasetSource(source),
                                          targets=target if target in frame else None, name=f"examples-{context}")
        mlflow.log_input(dataset, context=context)


def log_run_record(run, report_path: Path | None, figures: dict[str, bytes], bundle_dir: Path) -> None:
    """Config, parameters, fingerprint, metrics (the cutoffs' test figures among them), the
    datasets, a description, plots and report into the active run."""
    mlflow.log_params({k: v for k, v in run.params.items()})
    mlflow.log_metrics({**{k: float(v) for k, v in run.metrics.items()}, **cutoff_metrics(run.cutoffs)})
    mlflow.set_tags({"data_hash": run.fingerprint["hash"],
                     "suspected_leakage": ", ".join(run.suspected_leakage) or "none",
                     "mlflow.note.content": run_description(run)})
    primary = run.labels.get(run.primary.name)
    parts = getattr(primary, "parts", None)
    log_datasets({"training": getattr(parts, "fit", None), "calibration": getattr(parts, "calibration", None),
                  "test": run.test_frame}, source=str(run.config.data or run.config.source or "data"),
                 target=run.primary.name)
    mlflow.log_artifact(str(run.config.path), artifact_path="config")
    _json_artifact(run.fingerprint, "data_fingerprint.json")
    _json_artifact(run.lines, "run_log.json")
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in figures.items():
            (Path(tmp) / name).write_bytes(png)
            mlflow.log_artifact(str(Path(tmp) / name), artifact_path="plots")
        for name, table in (("leakage_audit.csv", run.leakage), ("cutoffs.csv", run.cutoffs),
                            ("comparison.csv", run.comparison)):
            table.to_csv(Path(tmp) / name)
            mlflow.log_artifact(str(Path(tmp) / name), artifact_path="tables")
    if report_path is not None:
        mlflow.log_artifact(str(report_path))
    mlflow.log_artifact(str(bundle_dir / "manifest.json"), artifact_path="bundle")
    if (bundle_dir / "shap_importance.csv").exists():
        mlflow.log_artifact(str(bundle_dir / "shap_importance.csv"), artifact_path="tables")


def model_identity(uri: str, manifest: dict, tracking_uri: str | None = None) -> tuple[str, str]:
    """(model_version, run_id) to stamp on scores: ``leadscore/3`` and its MLflow run for a
    registry URI, the bundle's name and creation time (and its run, when it was trained with
    tracking) for a bundle directory."""
    if os.path.isdir(uri):
        return f"{manifest.get('name', Path(uri).name)} bundle {manifest.get('created_at', '')}".strip(), \
            manifest.get("mlflow_run_id") or ""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    if uri.startswith("models:/"):
        name, _, ref = uri[len("models:/"):].partition("@")
        if ref:
            mv = client.get_model_version_by_alias(name, ref)
        else:
            name, _, number = uri[len("models:/"):].rpartition("/")
            mv = client.get_model_version(name, number)
        return f"{mv.name}/{mv.version}", mv.run_id or ""
    if uri.startswith("runs:/"):
        return uri, uri[len("runs:/"):].split("/")[0]
    return uri, manifest.get("mlflow_run_id") or ""


def registered_version(uri: str):
    """The ModelVersion a ``models:/name@alias`` or ``models:/name/3`` URI names."""
    client = MlflowClient()
    name, _, ref = uri[len("models:/"):].partition("@")
    if ref:
        return client.get_model_version_by_alias(name, ref)
    name, _, number = uri[len("models:/"):].rpartition("/")
    return client.get_model_version(name, number)


def check_model_files(local: Path, manifest: dict) -> None:
    """The downloaded registry copy holds only what leadscore logged: an MLmodel whose pyfunc
    flavor runs ``registered_model.py`` (no pickled python_model), no pickle or bytecode
    anywhere, and exactly the code files the (verified) manifest records, byte for byte."""
    import yaml

    problems = []
    try:
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise BundleError(f"{local}: refusing to load the registered model: MLmodel unreadable ({exc})") from None
    if "python_model" in flavor or Path(str(flavor.get("model_code_path", ""))).name != MODEL_CODE.name:
        problems.append(f"MLmodel does not load the model through {MODEL_CODE.name} "
                        f"(python_model {flavor.get('python_model')!r}, model_code_path {flavor.get('model_code_path')!r})")
    problems += [f"{p.relative_to(local)}: a pickle or bytecode file" for p in sorted(local.rglob("*"))
                 if p.suffix in PICKLE_SUFFIXES]
    expected = manifest.get("code") or {}
    code_dir = local / str(flavor.get("code") or "code") / "leadscore"
    present = {p.relative_to(code_dir).as_posix(): p for p in sorted(code_dir.rglob("*")) if p.is_file()} \
        if code_dir.is_dir() else {}
    problems += [f"code/leadscore/{rel}: not recorded in the bundle's manifest" for rel in present if rel not in expected]
    problems += [f"code/leadscore/{rel}: missing" for rel in expected if rel not in present]
    problems += [f"code/leadscore/{rel}: differs from the hash the bundle's manifest records (modified)"
                 for rel, path in present.items() if rel in expected and sha256_file(path) != expected[rel]]
    model_code = local / str(flavor.get("model_code_path", ""))
    recorded = expected.get(MODEL_CODE_KEY, expected.get(MODEL_CODE.name))  # the key before the stage packages
    if model_code.is_file() and sha256_file(model_code) != recorded:
        problems.append(f"{flavor['model_code_path']}: differs from the hash the bundle's manifest records (modified)")
    if problems:
        raise BundleError(f"{local}: refusing to load the registered model:\n  " + "\n  ".join(problems))


def verify_registered(uri: str, tracking_uri: str | None = None) -> tuple[Path, dict]:
    """Download a registered model and check it (:func:`check_model_files`, the bundle, and that
    the bundle was written by the run that registered the version) without running any of its
    code; returns (the bundle directory, its manifest)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    bundles = [p for p in (local / "artifacts").iterdir() if p.is_dir()] if (local / "artifacts").is_dir() else []
    if len(bundles) != 1:
        raise BundleError(f"{uri}: refusing to load the registered model: expected one bundle under artifacts/, "
                          f"found {[p.name for p in bundles]}")
    manifest = verify_bundle(bundles[0])
    check_model_files(local, manifest)
    if uri.startswith("models:/"):
        version = registered_version(uri)
        if manifest.get("mlflow_run_id") != version.run_id:
            raise BundleError(f"{uri}: refusing to load the registered model: version {version.version} was "
                              f"registered by run {version.run_id}, but its bundle was written by run "
                              f"{manifest.get('mlflow_run_id')} (two trainings crossed)")
    return bundles[0], manifest


def bundle_of(uri: str, tracking_uri: str | None = None) -> Path:
    """The bundle directory of a bundle directory or an MLflow model URI (``models:/leadscore@champion``:
    downloaded and verified first, :func:`verify_registered`)."""
    return Path(uri) if os.path.isdir(uri) else verify_registered(uri, tracking_uri)[0]


def load_scorer(uri: str, tracking_uri: str | None = None):
    """A Scorer from a bundle directory or an MLflow model URI (:func:`bundle_of`); no code from
    the registry copy runs."""
    manifest, objects = load_bundle(bundle_of(uri, tracking_uri))
    return objects[SCORER_FILE], manifest


def log_monitoring(tracking: TrackingConfig, result, report_path: Path | None, figures: dict[str, bytes],
                   model_uri: str) -> str:
    """One MLflow run per monitoring check: the ``monitor_*`` metrics, the verdict as a tag,
    the JSON, the plots and the report. Returns the run id."""
    configure(tracking)
    with mlflow.start_run(run_name=f"monitor {result.facts['latest_run'][:10]}") as active:
        mlflow.set_tags({"verdict": result.verdict, "model": model_uri,
                         "model_versions": ", ".join(result.facts["model_versions"]) or "-"})
        mlflow.log_params({"observed_until": result.facts["observed_until"], "runs": result.facts["runs"],
                           "ece_limit": result.config.ece_limit, "psi_watch": result.config.psi_watch,
                           "psi_act": result.config.psi_act, "target_tolerance": result.config.target_tolerance})
        mlflow.log_metrics({k: v for k, v in result.metrics().items() if v == v})  # NaN: not computed
        _json_artifact(result.to_json(), "monitor.json")
        with tempfile.TemporaryDirectory() as tmp:
            for name, png in figures.items():
                (Path(tmp) / name).write_bytes(png)
                mlflow.log_artifact(str(Path(tmp) / name), artifact_path="plots")
        if report_path is not None:
            mlflow.log_artifact(str(report_path))
        return active.info.run_id

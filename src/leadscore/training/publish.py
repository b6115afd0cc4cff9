"""What a training run leaves behind: its bundle, its MLflow run and registered model version,
and - for a retrain - the promotion decision.

``leadscore train`` registers the first model as the champion and later ones beside it;
``leadscore retrain`` compares the challenger with the champion on outcomes neither was
trained on and moves the ``champion`` alias only when it wins (:func:`retrain_and_promote`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leadscore.serving import registry as T
from leadscore.serving.bundle import publish_bundle
from leadscore.training.pipeline import (
    compare_champion,
    promotion_decision,
    write_outputs,
)

Say = Callable[[str], None]


@contextlib.contextmanager
def run_bundle_dir(bundle_dir: Path):
    """A directory of this training run's own for its bundle (beside ``bundle_dir``, removed
    afterwards): what the run logs and registers is what it wrote, whatever another training
    does to ``bundle_dir`` meanwhile; :func:`leadscore.serving.bundle.publish_bundle` then copies it there."""
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f".{bundle_dir.name}.run-", dir=bundle_dir.parent))
    try:
        yield root / bundle_dir.name
    finally:
        shutil.rmtree(root, ignore_errors=True)


def register(tracking, bundle_dir: Path, run):
    """Log the bundle as the pyfunc model of the active MLflow run and register it."""
    example = run.test_frame.head(5)[["lead_id", "as_of", *run.scorer.features]]
    return T.log_model_version(tracking, bundle_dir, example, run.scorer.score(example))


def publish_training(pipeline, run, bundle_dir: Path, say: Say) -> str:
    """Log and register a training run, make it the champion when there is none, publish its
    bundle to ``bundle_dir``; returns the MLflow run id."""
    import mlflow

    client = T.configure(pipeline.tracking)
    with mlflow.start_run(run_name=f"train {pipeline.name}") as active, run_bundle_dir(bundle_dir) as staged:
        report, figures = write_outputs(run, staged, active.info.run_id)
        T.log_run_record(run, report, figures, staged)
        version = register(pipeline.tracking, staged, run)
        _champion_if_first(client, pipeline.tracking.registered_model, version.version, say,
                           "the champion is unchanged; `leadscore retrain` decides promotions")
        publish_bundle(staged, bundle_dir)
    return active.info.run_id


def _champion_if_first(client, name: str, version: str, say: Say, otherwise: str, alias: str | None = None) -> None:
    """The first registered version of ``name`` becomes the champion; a later one gets ``alias``
    (if any) and the champion stays."""
    import mlflow

    if T.champion_version(client, name) is None:
        T.set_alias(client, name, T.CHAMPION, version)
        mlflow.set_tag("promotion", "first model: champion")
        say(f"registered {name} version {version} as @{T.CHAMPION}")
        return
    if alias is not None:
        T.set_alias(client, name, alias, version)
    say(f"registered {name} version {version}" + (f" as @{alias}" if alias else "") + f" ({otherwise})")


def publish_flat(run, config: Path, bundle_dir: Path, tracking, say: Say) -> str:
    """Log and register a flat export's training run (the first model becomes the champion,
    later ones the challenger), publish its bundle to ``bundle_dir``; returns the MLflow run id."""
    import mlflow

    from leadscore.training.flat_pipeline import input_example, write_flat_outputs

    client = T.configure(tracking)
    with mlflow.start_run(run_name=f"train {run.dataset.bundle_name}") as active, \
            run_bundle_dir(bundle_dir) as staged:
        report, _ = write_flat_outputs(run, staged, active.info.run_id)
        mlflow.log_params(run.params)
        mlflow.log_metrics(run.metrics)
        mlflow.set_tags({"data_hash": run.fingerprint["hash"], "flat": "true"})
        mlflow.log_artifact(str(config), artifact_path="config")
        mlflow.log_artifact(str(report))
        mlflow.log_artifact(str(staged / "manifest.json"), artifact_path="bundle")
        example = input_example(run)
        version = T.log_model_version(tracking, staged, example, run.scorer.score(example))
        _champion_if_first(client, tracking.registered_model, version.version, say, "the champion is unchanged",
                           alias=T.CHALLENGER)
        publish_bundle(staged, bundle_dir)
    return active.info.run_id


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    reason: str
    report: Path


def retrain_and_promote(pipeline, run, con, bundle_dir: Path, say: Say) -> Promotion:
    """Register ``run`` as the challenger; promote it to champion when it beats the champion by
    the ``promotion`` margins on outcomes neither was trained on (or there is no champion).
    The decision and both sets of metrics are logged to MLflow either way; the winner's bundle
    goes to ``bundle_dir``, a losing challenger's beside it (``<name>-challenger``)."""
    import mlflow

    client = T.configure(pipeline.tracking)
    name = pipeline.tracking.registered_model
    champion = T.champion_version(client, name)
    challenger_dir = bundle_dir.with_name(f"{bundle_dir.name}-challenger")
    with mlflow.start_run(run_name=f"retrain {pipeline.name}") as active, run_bundle_dir(bundle_dir) as staged:
        report, figures = write_outputs(run, staged, active.info.run_id)
        T.log_run_record(run, report, figures, staged)
        version = register(pipeline.tracking, staged, run)
        T.set_alias(client, name, T.CHALLENGER, version.version)
        p = run.primary.short
        since = None
        if champion is None:
            promote, reason = True, "promote: there is no champion yet"
        else:
            scorer, champion_manifest = T.load_scorer(f"models:/{name}@{T.CHAMPION}")
            compared = compare_champion(run, scorer, champion_manifest, con)
            since = compared.since
            if compared.champion is None:
                promote, reason = False, f"keep the champion: {compared.reason}"
            else:
                say(f"champion and challenger on {compared.rows:,} held-out examples as of dates after the "
                    f"champion's data ({compared.since:%Y-%m-%d}), {compared.positives:,} positive:")
                mlflow.log_metrics({**{f"champion_{p}_{k}": v for k, v in compared.champion.items()},
                                    **{f"challenger_{p}_{k}": v for k, v in compared.challenger.items()},
                                    "promotion_rows": compared.rows, "promotion_positives": compared.positives})
                promote, reason = promotion_decision(compared.champion, compared.challenger, pipeline.promotion)
        if since is not None:
            mlflow.set_tag("comparison_since", f"{since:%Y-%m-%d}")
        mlflow.set_tags({"promotion": "promoted" if promote else "kept champion", "promotion_reason": reason,
                         "champion_version": champion.version if champion else "none",
                         "challenger_version": version.version})
        if promote:
            T.set_alias(client, name, T.CHAMPION, version.version)
            publish_bundle(staged, bundle_dir)
            shutil.rmtree(challenger_dir, ignore_errors=True)
        else:
            publish_bundle(staged, challenger_dir)
    return Promotion(version.version, promote, reason, (bundle_dir if promote else challenger_dir) / "report.html")

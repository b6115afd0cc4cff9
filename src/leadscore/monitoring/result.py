"""What monitoring returns: its settings, its result and the verdict with its exit codes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Annotated

import pandas as pd
from pydantic import Field, model_validator

from leadscore.io import jsonable
from leadscore.labels.examples import label_spec
from leadscore.settings import Positive, Section, Whole

NO_ACTION, REVIEW_CUTOFFS, RETRAIN = "no action", "review cutoffs", "retrain"
EXIT_NO_ACTION = 0
EXIT_RETRAIN = 4          # drift or calibration beyond limits: a scheduler can chain `leadscore retrain`
EXIT_REVIEW_CUTOFFS = 5   # realized conversion off the cutoffs' targets
EXIT_CODES = {NO_ACTION: EXIT_NO_ACTION, RETRAIN: EXIT_RETRAIN, REVIEW_CUTOFFS: EXIT_REVIEW_CUTOFFS}

MISSING_BIN = "missing"
US_PER_DAY = 86_400_000_000


class MonitorConfig(Section):
    """Limits and sample sizes of the monitor.

    ``ece_limit`` 0.01: ECE is in probability units. Open leads convert at a few per cent
    in 42 days, so an ECE of 0.01 means the probabilities are off on average by roughly a
    third to all of the base rate - enough to move the leads a conversion-rate cutoff lets
    through - while a well calibrated model shows a few thousandths (0.001 on the 50k demo
    test weeks, about 0.004 on the 8k test setup). The flag also requires ECE above what
    perfect calibration shows by chance on the same rows (``chance_draws`` simulations).
    ``psi_watch`` / ``psi_act``: the customary 0.1 / 0.25. ``target_tolerance`` 0.2: a
    realized rate counts as off target only if its interval lies wholly below target x 0.8;
    cutoffs are set on a calibration slice of a few thousand rows, and the training
    report's own test-slice intervals for the cutoffs are that wide. ``min_rows``: a cell
    (tier, band, bin) with fewer matured rows is shown but never flagged.
    ``reference_dates`` / ``reference_size``: the training-window reference population.
    ``max_lead_age_days``: the model's domain (training's ``examples.max_lead_age_days``;
    the manifest's value wins when it carries one; None: no restriction).
    """

    ece_limit: Positive = 0.01
    ece_bins: Whole = 10
    chance_draws: Annotated[int, Field(ge=0)] = 200
    psi_watch: Positive = 0.1
    psi_act: Positive = 0.25
    psi_bins: Whole = 10
    psi_epsilon: Positive = 1e-4
    unseen_watch: float = 0.01
    target_tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.2
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    bootstrap: Annotated[int, Field(ge=0)] = 1000
    min_rows: Whole = 30
    reference_dates: Whole = 5
    reference_size: Whole = 10_000
    max_lead_age_days: Whole | None = 365
    observed_until: str | None = None
    persona_bands: Whole = 5
    persona_min_leads: Whole = 10
    persona_top: Whole = 20
    seed: int = 0

    @model_validator(mode="after")
    def _psi_order(self):
        if self.psi_watch > self.psi_act:
            raise ValueError(f"psi_watch ({self.psi_watch}) must not exceed psi_act ({self.psi_act})")
        return self


def ece_flag(ece: float, chance: float, config: MonitorConfig) -> bool:
    if not math.isfinite(ece):
        return False
    return ece > config.ece_limit and (not math.isfinite(chance) or ece > chance)


@dataclass
class MonitorResult:
    verdict: str
    reasons: list[str]                   # what triggered the verdict, with the numbers
    notes: list[str]                     # everything else worth a sentence
    facts: dict                          # model, windows, row counts
    runs: pd.DataFrame                   # per scoring run: rows, matured, immature
    by_tier: pd.DataFrame
    by_baseline_tier: pd.DataFrame
    by_band: pd.DataFrame
    targets: pd.DataFrame                # MQL-or-better and SQL tier vs the cutoffs' targets
    reliability: pd.DataFrame
    ece: float
    ece_chance: float
    psi: pd.DataFrame                    # one row per feature and for the probability / score
    persona: pd.DataFrame                # characteristics over-represented among disqualified leads
    misleading: pd.DataFrame             # SHAP contributions that pushed disqualified leads up
    capacity: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run: open leads and new arrivals per tier
    config: MonitorConfig = field(default_factory=MonitorConfig)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def ece_flag(self) -> bool:
        return ece_flag(self.ece, self.ece_chance, self.config)

    def psi_of(self, name: str) -> float:
        row = self.psi[self.psi["feature"] == name]
        return float(row["psi"].iloc[0]) if len(row) else float("nan")

    def metrics(self) -> dict[str, float]:
        """Flat ``monitor_*`` numbers for MLflow (NaN where a figure could not be computed)."""
        feats = self.psi[self.psi["kind"] != "score"]
        top = feats.sort_values("psi", ascending=False).head(1)
        target = self.targets.set_index("population") if len(self.targets) else pd.DataFrame()

        def tgt(pop: str, col: str) -> float:
            return float(target.loc[pop, col]) if pop in target.index and pd.notna(target.loc[pop, col]) else math.nan

        total = self.by_tier[self.by_tier["tier"] == "all"]
        label = label_spec(self.facts["primary_label"])
        p = label.short

        def rate(col: str) -> float:
            return float(total[col].iloc[0]) if len(total) and col in total else math.nan

        out = {
            "monitor_verdict_code": float(self.exit_code),
            "monitor_scored_rows": float(self.facts["scored_rows"]),
            "monitor_matured_rows": float(self.facts["matured_rows"]),
            "monitor_immature_rows": float(self.facts["immature_rows"]),
            "monitor_runs": float(self.facts["runs"]),
            f"monitor_realized_{p}_rate": rate("realized_rate"),
            f"monitor_predicted_{p}_rate": rate("predicted_rate"),
            f"monitor_realized_mql_{p}_rate": tgt("MQL or better", "realized"),
            f"monitor_target_mql_{p}_rate": tgt("MQL or better", "target"),
            "monitor_realized_sql_tier_rate": tgt("SQL tier", "realized"),
            "monitor_target_sql_tier_rate": tgt("SQL tier", "target"),
            "monitor_ece": self.ece,
            "monitor_ece_chance": self.ece_chance,
            "monitor_ece_limit": self.config.ece_limit,
            "monitor_ece_score_bands": float(self.facts.get("ece_score_bands", math.nan)),
            "monitor_psi_score": self.psi_of(label.probability),
            "monitor_psi_score_points": self.psi_of("score"),
            "monitor_psi_max_feature": float(top["psi"].iloc[0]) if len(top) else math.nan,
            "monitor_psi_features_watch": float((feats["status"] == "watch").sum()),
            "monitor_psi_features_act": float((feats["status"] == "act").sum()),
            "monitor_unseen_share_max": float(feats["unseen_share"].max()) if feats["unseen_share"].notna().any()
            else math.nan,
            "monitor_out_of_domain_share": float(self.facts.get("out_of_domain_share", math.nan)),
            "monitor_disqualified_leads": float(self.facts.get("disqualified_leads", 0)),
            "monitor_converted_leads": float(self.facts.get("converted_leads", 0)),
        }
        newest = self.capacity.dropna(subset=["new_mql_or_better_per_week"]).tail(1)
        out["monitor_new_mql_or_better_per_week"] = (float(newest["new_mql_or_better_per_week"].iloc[0])
                                                     if len(newest) else math.nan)
        out["monitor_new_sql_per_week"] = float(newest["new_sql_per_week"].iloc[0]) if len(newest) else math.nan
        if label.name == "became_sql":  # the funnel's next step, where its window has matured
            out["monitor_realized_won_rate"] = rate("realized_won_rate")
            out["monitor_realized_sql_won_rate"] = rate("realized_sql_to_won")
        return {k: (float(v) if v is not None else math.nan) for k, v in out.items()}

    def to_json(self) -> dict:
        """Everything in the report as plain JSON types (NaN as null, timestamps as ISO text)."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return json.loads(frame.to_json(orient="records", date_format="iso")) if len(frame) else []

        return jsonable({
            "verdict": self.verdict, "exit_code": self.exit_code, "reasons": list(self.reasons),
            "notes": list(self.notes), "facts": self.facts, "config": self.config.as_dict(),
            "metrics": self.metrics(), "runs": records(self.runs), "by_tier": records(self.by_tier),
            "by_baseline_tier": records(self.by_baseline_tier), "by_band": records(self.by_band),
            "targets": records(self.targets),
            "calibration": {"ece": self.ece, "ece_chance": self.ece_chance, "ece_limit": self.config.ece_limit,
                            "flag": self.ece_flag, "reliability": records(self.reliability)},
            "psi": records(self.psi), "persona": records(self.persona), "misleading": records(self.misleading),
            "capacity": records(self.capacity),
        })


# ---------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------

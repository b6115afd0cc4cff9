from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from leadscore.synthetic import SynthConfig, generate


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic CRM (3,000 leads), generated once per test session."""
    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate(SynthConfig(n_leads=3000, seed=11), out, progress=False)
    return out


@pytest.fixture(scope="session")
def funnel_dir(tmp_path_factory):
    """The acceptance data set: 20,000 leads, seed 7."""
    out = tmp_path_factory.mktemp("funnel") / "data"
    generate(SynthConfig(n_leads=20_000, seed=7), out, progress=False)
    return out


@pytest.fixture(scope="session")
def xeducation_csv() -> Path:
    """The real X Education export next to the repository; tests that need it skip without it."""
    repo = Path(__file__).resolve().parents[1]
    for base in (repo.parent / "shared", Path("/work/shared")):
        path = base / "datasets" / "xeducation" / "Leads.csv"
        if path.exists():
            return path
    pytest.skip("X Education export not found next to the repository (../shared/datasets/xeducation)")


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


@pytest.fixture
def tables():
    """Three tiny contract tables that satisfy every rule."""
    leads = pd.DataFrame({
        "lead_id": ["A", "B", "C"],
        "created_at": [ts("2025-01-01"), ts("2025-01-05"), ts("2025-02-01")],
        "job_title": ["VP of Sales", None, "Student"],
        "seniority": ["vp", None, "student"],
        "department": ["sales", None, None],
        "company_size": pd.array([250, None, None], dtype="Int64"),
        "industry": ["Software", None, "Education"],
        "country": ["US", "DE", None],
        "lead_source": ["referral", "paid_search", "social"],
        "email_domain_type": ["corporate", "free", "student"],
    })
    activities = pd.DataFrame({
        "lead_id": ["A", "A", "B", "C"],
        "occurred_at": [ts("2025-01-02"), ts("2025-01-03"), ts("2025-01-06"), ts("2025-02-02")],
        "activity_type": ["page_view_pricing", "demo_request", "email_open", "content_download"],
        "detail": [None, None, None, "ebook-01"],
    })
    lifecycle = pd.DataFrame({
        "lead_id": ["A", "A", "B"],
        "stage": ["mql", "sql", "mql"],
        "occurred_at": [ts("2025-01-03"), ts("2025-01-10"), ts("2025-01-07")],
        "amount": [None, None, None],
    })
    return {"leads": leads, "activities": activities, "lifecycle": lifecycle}

"""``leadscore synth --profile flat``: a one-row-per-lead export of the synthetic world.

What a team without event tables exports from its CRM: one row per MQL, with the day it
became one (``MQL Date``, written day first: ``31/12/2024 17:05``), who the lead is, what it did
in the 30 days before (visits, pricing-page views, downloads, webinars, demo requests - counts
from the activity history strictly before the MQL date), whether it ever became an SQL
(``Converted``) and when (``SQL Date``). Generated from the default profile's tables (with
``--drift``, channels change what their leads are worth halfway through - the case where a
random split is optimistic), and written with ``flat.yaml``, the dataset config that reads it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leadscore.features.builder import connect
from leadscore.io import atomic_path

DATE_FORMAT = "%d/%m/%Y %H:%M"
WINDOW_DAYS = 30

QUERY = f"""
WITH mql AS (
    SELECT lead_id, min(occurred_at) AS mql_at FROM lifecycle WHERE stage = 'mql' GROUP BY lead_id
), sql_ AS (
    SELECT l.lead_id, min(l.occurred_at) AS sql_at
    FROM lifecycle l JOIN mql m USING (lead_id)
    WHERE l.stage = 'sql' AND l.occurred_at >= m.mql_at GROUP BY l.lead_id
), act AS (
    SELECT a.lead_id,
           count(*) FILTER (WHERE a.activity_type LIKE 'page_view%') AS visits,
           count(*) FILTER (WHERE a.activity_type = 'page_view_pricing') AS pricing,
           count(*) FILTER (WHERE a.activity_type = 'content_download') AS downloads,
           count(*) FILTER (WHERE a.activity_type = 'webinar_attendance') AS webinars,
           count(*) FILTER (WHERE a.activity_type IN ('demo_request', 'contact_sales')) AS hand_raisers,
           count(*) FILTER (WHERE a.activity_type = 'email_click') AS email_clicks
    FROM activities a JOIN mql m USING (lead_id)
    WHERE a.occurred_at < m.mql_at AND a.occurred_at >= m.mql_at - INTERVAL {WINDOW_DAYS} DAY
    GROUP BY a.lead_id
)
SELECT 'XL' || substr(le.lead_id, 2) AS "Lead ID", m.mql_at, s.sql_at,
       le.lead_source AS "Lead Source", le.country AS "Country", le.industry AS "Industry",
       le.seniority AS "Seniority", le.email_domain_type AS "Email Type", le.company_size AS "Company Size",
       coalesce(a.visits, 0) AS "Page Views 30d", coalesce(a.pricing, 0) AS "Pricing Views 30d",
       coalesce(a.downloads, 0) AS "Downloads 30d", coalesce(a.webinars, 0) AS "Webinars 30d",
       coalesce(a.email_clicks, 0) AS "Email Clicks 30d",
       CASE WHEN coalesce(a.hand_raisers, 0) > 0 THEN 'Yes' ELSE 'No' END AS "Asked For Contact",
       CASE WHEN s.sql_at IS NULL THEN 0 ELSE 1 END AS "Converted"
FROM mql m JOIN leads le USING (lead_id)
LEFT JOIN sql_ s USING (lead_id) LEFT JOIN act a USING (lead_id)
ORDER BY m.mql_at, le.lead_id
"""

CONFIG = f"""# One-row-per-lead export written by `leadscore synth --profile flat` (see leadscore.synthetic.flat).
dataset: synthetic-flat
path: leads.csv
id_column: Lead ID
label_column: Converted
positive_values: [1]
label: became_sql
date_column: MQL Date
outcome_date_column: SQL Date
date_format: "{DATE_FORMAT}"
horizon_days: 60
categorical: [Lead Source, Country, Industry, Seniority, Email Type, Asked For Contact]
numeric: [Company Size, Page Views 30d, Pricing Views 30d, Downloads 30d, Webinars 30d, Email Clicks 30d]
fit_columns: [Lead Source, Country, Industry, Seniority, Email Type, Company Size]
descriptions:
  Page Views 30d: web pages viewed in the 30 days before the MQL date
  Pricing Views 30d: pricing-page views in the 30 days before the MQL date
split:
  folds: 3
  test_weeks: 8
  step_weeks: 8
cutoffs:             # sales takes the top 10 % as SQLs, marketing nurtures the next 20 % as MQLs
  policy: capacity
  mql: 0.3
  sql: 0.1
"""


def flat_export(data_dir: Path | str, out_dir: Path | str) -> Path:
    """Write ``leads.csv`` and ``flat.yaml`` into ``out_dir`` from the contract tables in
    ``data_dir``; returns the config's path."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect({table: str(data_dir / f"{table}.parquet") for table in ("leads", "activities", "lifecycle")})
    frame = con.execute(QUERY).df()
    con.close()
    for column, name in (("mql_at", "MQL Date"), ("sql_at", "SQL Date")):
        frame.insert(1 if name == "MQL Date" else 2, name, pd.to_datetime(frame.pop(column), utc=True)
                     .dt.strftime(DATE_FORMAT))
    with atomic_path(out_dir / "leads.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(out_dir / "flat.yaml") as tmp:
        Path(tmp).write_text(CONFIG)
    return out_dir / "flat.yaml"

"""Data in: the contract of the three tables, its validation and quarantine, and the funnel summary."""

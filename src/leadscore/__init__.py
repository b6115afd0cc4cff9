"""leadscore: predictive lead scoring with a rule-based baseline alongside."""

__version__ = "0.1.0"

"""Data in: the contract's tables from whatever a CRM exports (source mappings)."""

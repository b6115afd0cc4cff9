"""Source mappings: a CRM export's own tables, names and formats read into the contract."""

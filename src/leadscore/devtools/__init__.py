"""Tools for developing leadscore itself (not used by the pipeline): e.g. report screenshots."""

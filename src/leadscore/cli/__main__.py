"""`python -m leadscore.cli ...`: the same commands as the `leadscore` script."""

from leadscore.cli.app import app

app(prog_name="leadscore")

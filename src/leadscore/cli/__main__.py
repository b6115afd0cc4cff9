"""`python -m leadscore.cli ...`: the same commands as the `leadscore` script."""

import sys

from leadscore.cli.app import main

sys.exit(main())

"""`python -m deployments.cli ...`: the `jobcloud` command."""

import sys

from deployments.cli.main import main

sys.exit(main())

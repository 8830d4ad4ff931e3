"""`python -m jobcloud.deployments.cli ...`: the `jobcloud` command."""

import sys

from jobcloud.deployments.cli.main import main

sys.exit(main())

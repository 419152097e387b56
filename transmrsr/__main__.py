"""``python -m transmrsr`` runs the command line."""

import sys

from transmrsr.cli.main import main

sys.exit(main())

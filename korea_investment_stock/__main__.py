"""Run the command line: ``python -m korea_investment_stock --help``."""

import sys

from .cli import main

sys.exit(main())

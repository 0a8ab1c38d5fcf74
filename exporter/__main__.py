"""Allows `python -m exporter` as an alias of the console script."""

import sys

from exporter.cli import main

sys.exit(main())

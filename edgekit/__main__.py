"""`python -m edgekit` is the `edgekit` command."""
import sys

from .cli import main

sys.exit(main())

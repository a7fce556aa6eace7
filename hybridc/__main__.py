"""`python -m hybridc ...` is the `hybridc` command."""
import sys

from .cli import main

sys.exit(main())

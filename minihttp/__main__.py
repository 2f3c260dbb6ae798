"""`python -m minihttp`: the same command line as the `minihttp` script."""

import sys

from .cli import main

sys.exit(main())

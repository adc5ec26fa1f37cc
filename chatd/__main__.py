"""`python -m chatd` is the `chatd` command."""

import sys

from chatd.cli import main

sys.exit(main())

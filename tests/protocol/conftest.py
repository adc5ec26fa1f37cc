"""Puts the repository root on sys.path, so that `import protocol` works in these tests.

The project is not installed into the virtualenv. Nothing else here: the protocol tests
need no fixtures, no services and no event loop.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

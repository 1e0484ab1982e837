"""``python scripts/reproduce [options]`` from anywhere, or ``python -m scripts.reproduce [options]`` from the
repository root."""

import sys
from pathlib import Path

if not __package__:  # run as a folder: Python put this folder on sys.path; import it as scripts.reproduce instead
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.reproduce.cli import main
else:
    from .cli import main

sys.exit(main())

"""The console entry point of `runner` and `python -m runner`.

It imports nothing heavy itself: Hydra, OmegaConf and the runner are imported inside `main`,
so that a Ctrl-C during those imports (the first half second) ends like a Ctrl-C at any later
moment, as one line and exit 130, not as a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from runner.app import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()

"""The console entry point of `runner` and `python -m runner`.

It imports nothing heavy itself: Hydra, OmegaConf and the runner are imported inside `main`,
so that a Ctrl-C during those imports (the first half second) ends like a Ctrl-C at any later
moment, as one line and exit 130, not as a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    keep_lost_interrupts()
    try:
        from runner.app import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()


def keep_lost_interrupts() -> None:
    """A Ctrl-C whose KeyboardInterrupt is raised inside a weakref callback or a finalizer
    cannot propagate: Python prints "Exception ignored in ..." with a traceback and runs on, the
    Ctrl-C lost (seen in a sweep's job: importlib's module-lock callback, during an import).
    Such an interrupt is delivered again instead, silently, once the callback has returned."""
    previous = sys.unraisablehook

    def hook(unraisable: object) -> None:
        exc_type = getattr(unraisable, "exc_type", None)
        if isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt):
            _interrupt_main_soon()
            return
        previous(unraisable)  # type: ignore[arg-type]

    sys.unraisablehook = hook


def _interrupt_main_soon() -> None:
    # Not from the hook itself: the interrupt would be raised inside the hook, and be lost the
    # same way. A thread gives it to the main thread a moment later, at its next bytecode.
    import _thread
    import time

    def later() -> None:
        time.sleep(0.01)
        _thread.interrupt_main()

    _thread.start_new_thread(later, ())

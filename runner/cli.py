"""The console entry point of `runner` and `python -m runner`.

It imports nothing heavy itself: Hydra, OmegaConf and the runner are imported inside `main`,
so that a Ctrl-C during those imports (the first half second) ends like a Ctrl-C at any later
moment, as one line and exit 130, not as a traceback.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any


def main() -> None:
    if "--version" in sys.argv[1:]:  # Hydra's own flag would name Hydra's version, not ours
        print(version_line())
        return
    sys.argv[1:] = multirun_first(sys.argv[1:])
    count_interrupts()
    keep_lost_interrupts()
    try:
        from runner.app import main as run
    except KeyboardInterrupt:
        exit_interrupted()
    refuse_unusable_folder(sys.argv[1:])
    run()


def multirun_first(argv: list[str]) -> list[str]:
    """`runner a=1 -m b=1,2` means a sweep, but Hydra's argparse takes overrides only before
    its flags and ended it with "unrecognized arguments: b=1,2". -m takes no value: it goes
    first, the rest keep their order."""
    flags = [a for a in argv if a in ("-m", "--multirun")]
    if not flags or argv[: len(flags)] == flags:
        return argv
    return flags + [a for a in argv if a not in ("-m", "--multirun")]


# Hydra's flags that print and exit: no folder is made, so none is checked.
_NO_FOLDER_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}


def refuse_unusable_folder(argv: list[str]) -> None:
    """The run's folder (hydra.run.dir; hydra.sweep.dir with -m) as the command line names it,
    checked before Hydra starts: Hydra's own mkdir failed with a bare OSError, exit 1 and the
    traceback hint ("[Errno 17] File exists: 'x'"), naming no key. Exit 2, one line."""
    from runner.errors import ConfigError, folder_error

    if any(arg.partition("=")[0] in _NO_FOLDER_FLAGS for arg in argv):  # --cfg job, --cfg=job
        return
    key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) else "hydra.run.dir"
    for arg in argv:
        name, sep, value = arg.partition("=")
        if not sep or name.lstrip("+") != key:
            continue
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":  # Hydra's quoting
            value = value[1:-1]
        why = unusable_folder(value)
        if not why:
            continue
        said = folder_error(key, value, why)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # as app.main does: the traceback, the same exit code
            import traceback

            try:
                raise ConfigError(said)
            except ConfigError:
                traceback.print_exc()
        else:
            print(f"error: {said}", file=sys.stderr)
        sys.exit(2)


def unusable_folder(value: str) -> str:
    """Why the folder `value` names cannot be made or written into ("" if it can). Only its
    part before an interpolation (`${now:...}`) is known before Hydra resolves it: that part's
    folder is checked. A folder it would have to make is made and removed again: only that
    tells, say, /proc (which takes no new folder) from a writable one."""
    known, interpolated, _ = value.partition("${")
    if interpolated and not known.endswith("/"):
        known = os.path.dirname(known)  # `runs_${now:...}`: the folder it goes in
    if not known:
        return ""
    folder = os.path.abspath(known)  # relative to where the runner was started, as Hydra takes it
    there = folder
    while not os.path.lexists(there):  # the nearest part of it that exists
        there = os.path.dirname(there)
    if not os.path.isdir(there):
        return "a file, not a folder" if there == os.path.abspath(value) else f"{there} is a file, not a folder"
    if there == folder:
        return "" if os.access(folder, os.W_OK | os.X_OK) else "cannot write into this folder (permission denied)"
    first = os.path.join(there, os.path.relpath(folder, there).split(os.sep)[0])  # the first folder to make
    try:
        os.mkdir(first)
    except OSError as exc:
        return f"cannot create the folder {first} ({exc.strerror})"
    os.rmdir(first)
    return ""


def package_version(name: str) -> str | None:
    """An installed distribution's version from its metadata (None: not installed): cheap,
    where importing torch only to read its version would take seconds."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def version_line() -> str:
    """`runner 0.1.0 (torch 2.13.0, hydra-core 1.3.8, omegaconf 2.3.0)`."""
    import runner

    return f"runner {runner.__version__} (" + ", ".join(
        f"{n} {package_version(n) or 'not installed'}" for n in ("torch", "hydra-core", "omegaconf")) + ")"


def exit_interrupted() -> None:
    """Say "interrupted" and exit 130.

    Two ways this became exit -2 (about 2% of Ctrl-Cs half a second in, and once in CI):
    - CPython sets a flag when a KeyboardInterrupt leaves code that `exec` of a string runs
      (dataclasses builds its methods so, during the imports of the first second), and at
      exit it kills the process by SIGINT while the flag is set, even when the interrupt was
      caught. An `exec` of a string clears it: with that, 0 of 160 such Ctrl-Cs, against 4 of
      210 without.
    - A second Ctrl-C (or one `keep_lost_interrupts` delivers again) raised while the exit
      unwinds would escape uncaught, with the same end: SIGINT is ignored from here on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exec("")  # clears CPython's "unhandled KeyboardInterrupt" flag (see above)
    print("interrupted", file=sys.stderr)
    sys.exit(130)


_interrupts = [0]  # SIGINTs (and a single run's SIGTERMs) this process received


def _interrupt(signum: int, frame: Any) -> None:
    _interrupts[0] += 1
    raise KeyboardInterrupt


def interrupts() -> int:
    """How many interrupts this process has received: one that torch's import swallowed (its
    numpy set-up clears the error, and the job then ran to the end, exit 0) is seen after it."""
    return _interrupts[0]


def count_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt, as Python's own handler does, and is counted. SIGTERM
    does the same from the start (it killed the process during its first second and a half,
    exit 143: a single run left Hydra's .hydra/ and log without a result, a sweep its folder,
    and with resume=true a rewritten multirun.yaml). A sweep's launcher makes SIGTERM a Ctrl-C
    of its own while its jobs run. A process forked from this one (the launcher's target
    check, its fork server) keeps Python's default: the launcher ends those with SIGTERM."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not SIG_IGN: a background job
        signal.signal(signal.SIGINT, _interrupt)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        main_pid = os.getpid()

        def terminated(signum: int, frame: Any) -> None:
            if os.getpid() != main_pid:  # a forked child: end as Python's default would
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            _interrupt(signum, frame)

        terminated.runner_own = True  # type: ignore[attr-defined] # a job may replace it (app._sigterm_as_interrupt)
        signal.signal(signal.SIGTERM, terminated)


@contextlib.contextmanager
def interrupts_restored() -> Iterator[None]:
    """Whatever `hold_interrupts` does inside, Ctrl-C's and SIGTERM's handlers are as they were
    after: a job recorded, the process (a test's, an in-process sweep's) is interruptible again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: set outside Python; left as it is
                signal.signal(sig, handler)


def hold_interrupts() -> None:
    """From a job's first interrupt until it has recorded what finished, further ones are
    ignored: the launcher forwards a terminal's Ctrl-C (or a scheduler's SIGTERM) to its jobs
    half a second after they got their own, and a second KeyboardInterrupt raised while the
    result is summarized or written would lose it. The launcher's "stop now" is SIGKILL."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def keep_lost_interrupts() -> None:
    """A Ctrl-C whose KeyboardInterrupt is raised inside a weakref callback or a finalizer
    cannot propagate: Python prints "Exception ignored in ..." with a traceback and runs on, the
    Ctrl-C lost (seen in a sweep's job: importlib's module-lock callback, during an import).
    Such an interrupt is delivered again instead, silently, once the callback has returned."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc_type = getattr(unraisable, "exc_type", None)
        if (isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread() and not sys.is_finalizing()):
            try:
                _thread.start_new_thread(_signal_main_thread_soon, (threading.main_thread().ident,))
                return
            except RuntimeError:  # no new thread (the interpreter is shutting down): say it, as Python would
                pass
        previous(unraisable)

    sys.unraisablehook = hook


def _signal_main_thread_soon(main_ident: int) -> None:
    # From another thread, a moment later: raised inside the hook, the interrupt would be lost
    # the same way. A real SIGINT, not _thread.interrupt_main(): it ends a blocking call (sleep,
    # select, a lock) at once, and it waits while the main thread holds SIGINT blocked.
    time.sleep(0.01)
    signal.pthread_kill(main_ident, signal.SIGINT)

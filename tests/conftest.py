from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.schema import register  # noqa: E402

register()


def pytest_configure(config):
    # A suite started in the background by a shell (`pytest &`, a CI step's `cmd &`) has SIGINT
    # ignored, and the CLI processes it starts inherit that: runs that, as they should, then
    # ignore a Ctrl-C, which the Ctrl-C tests waited on until their timeout.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _sigint_as_found():
    """A test that runs the CLI in this process and interrupts it leaves SIGINT ignored (an
    interrupted run ignores it while it exits); the tests after it, and the processes they
    start, must see it as it was."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.fixture
def make_cfg():
    """Compose the app's config with overrides, as the CLI would (no output folders)."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_module(version_base="1.3", config_module="runner.configs"):
            return compose("config", overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("HYDRA_FULL_ERROR", None)
    return env

"""runner: a declarative benchmark runner for PyTorch inference with CUDA graphs, several
streams and pinned memory.

The bundled configs and models are `runner.configs` and `runner.models`: nothing generic is
installed at top level, so a project's own `models` or `configs` package stays its own. An
install maps the repository's top-level `configs/` and `models/` folders into this package
(pyproject's package-dir); run from a checkout without installing, the repository's root is
searched for them here.
"""

import os as _os

__version__ = "0.1.0"

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "configs", "config.yaml")) and _os.path.isfile(
    _os.path.join(_root, "models", "mlp.py")
):
    __path__.append(_root)  # noqa: F821  (a package's search path: runner.configs -> <root>/configs)

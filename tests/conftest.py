"""Test set-up: 4 forced CPU devices, so multi-device behaviour is tested without a GPU.

XLA reads the flag when its CPU backend starts, so it is set before any test touches JAX.
Caches (jaxdl's compilation cache, matplotlib's font cache) go to a temporary directory,
never the user's home: the app's default cache directory follows $XDG_CACHE_HOME.
"""

import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

FORCED_DEVICES = 4
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={FORCED_DEVICES}").strip()

REPO = Path(__file__).resolve().parents[1]

# The real-data tests read $JAXDL_DATA_DIR (one folder per dataset, as the library looks it
# up) and skip without it: CI has no data files.
DATA_DIR = Path(os.environ["JAXDL_DATA_DIR"]) if os.environ.get("JAXDL_DATA_DIR") else None


def data_path(*parts: str) -> Path:
    """A path under $JAXDL_DATA_DIR (a path that does not exist when it is unset)."""
    return (DATA_DIR or REPO / "no-JAXDL_DATA_DIR").joinpath(*parts)


# Set at import, before a test module imports matplotlib or a CLI subprocess starts; every
# subprocess inherits them. One folder per process (xdist workers too), removed at exit.
_CACHES = tempfile.mkdtemp(prefix="jaxdl-tests-caches-")
atexit.register(shutil.rmtree, _CACHES, ignore_errors=True)
os.environ["XDG_CACHE_HOME"] = os.path.join(_CACHES, "xdg_cache")  # jaxdl's XLA cache
os.environ["MPLCONFIGDIR"] = os.path.join(_CACHES, "matplotlib")  # else ~/.config/matplotlib


@pytest.fixture
def repo() -> Path:
    return REPO


def cli_env() -> dict[str, str]:
    """Environment for a subprocess through the real CLI: the forced devices, and the repo
    (ahead of any PYTHONPATH a test set) so `-m experiments.NAME` resolves."""
    path = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


_CRASH_LINE = re.compile(r"^[FE]\d{4} |Check fail|terminate called|Fatal Python error")


def stderr_tail(err: str, chars: int = 3000) -> str:
    """A subprocess's stderr for an assertion message: its crash lines (XLA's fatal log
    lines, failed checks) and its end, without the list of extension modules that Python's
    fault handler prints after a crash: that list alone would fill the message."""
    err = err.partition("\nExtension modules:")[0]
    crash = [line for line in err.splitlines() if _CRASH_LINE.search(line)]
    return "\n".join(crash[:10] + ["..."] * bool(crash) + [err[-chars:]])


def run_cli(module: str, *args: str, timeout: float = 300):
    import subprocess
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def make_config(experiment: str = "digits_cnn", **overrides):
    """An experiment's config with dotted-key overrides ("optimizer.name"), validated."""
    import importlib

    from jaxdl import config as config_lib
    config = importlib.import_module(f"experiments.{experiment}").get_config()
    return config_lib.validate(override(config, overrides))


def override(config, overrides: dict):
    """`config` with dotted-key overrides (`jaxdl.config.apply_overrides`)."""
    from jaxdl import config as config_lib
    return config_lib.apply_overrides(config, overrides)

"""Shared fixture of the script tests: the benchmark script a test module names, imported."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bench(request):
    """``scripts/<BENCH_SCRIPT>.py`` of the requesting module, loaded as a module.

    It is registered in ``sys.modules`` while the tests run (dataclasses and pickling look it
    up there) and removed afterwards.
    """
    name = request.module.BENCH_SCRIPT
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)

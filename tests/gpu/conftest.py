"""GPU tests: skipped where CuPy or a CUDA device is missing."""

import pytest

import sparana as sa


def pytest_collection_modifyitems(config, items):
    if sa.gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "tests/gpu" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)

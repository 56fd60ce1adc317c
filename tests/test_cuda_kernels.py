"""The GPU's sparse kernels (sparana.kernels.cuda), run by Numba's CUDA simulator on this CPU.

The simulator executes the kernels' own code, thread by thread, on NumPy arrays; the comparisons
with the plain reference are in tests/cuda_kernel_cases.py (tests/gpu runs them on a real GPU).
The simulator is chosen when Numba is imported, hence a process of its own.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
ROOT = Path(__file__).resolve().parents[1]


def test_the_cuda_kernels_match_the_reference_in_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_kernel_cases.py")], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("OK 50 comparisons"), done.stdout

"""Shared benchmark plumbing: run each contender in its own process, time, print a table.

Every contender runs in a fresh subprocess (so that one framework's thread pools
cannot slow the other), the contenders alternate, and the best of the repeats
is kept. Ratios are what matter: these machines are noisy.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np


def sparse_documentation_model(density, seed=0):
    """The documentation's MLP with its three hidden layers CSR at ``density`` (random pattern; the
    400x10 head dense), or all dense at density 1. Sparana is imported here, not at the top: a
    benchmark's worker may run the Sparana of another checkout (``--baseline``)."""
    import sparana as sa

    model = sa.documentation_model(comp_type="CPU", seed=seed)
    if density < 1:
        model.initialize_sparse_weights([density] * 3 + [1.0], "Xavier", bias_constant=0.1)
        model.convert_to_sparse([0, 1, 2])
        model.layers[3].prune_mask = None
    return model


def run_worker(script, *args, timeout=1800, env=None):
    """Run ``python script --worker args...`` (in ``env``, default this one) and return the JSON it
    prints on its last line."""
    command = [sys.executable, str(script), "--worker", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(script, contenders, repeats, key="seconds", env=None):
    """{contender: best result} over ``repeats`` alternating runs of each contender."""
    best = {}
    for _ in range(repeats):
        for name, args in contenders.items():
            result = run_worker(script, *args, env=env)
            if name not in best or result[key] < best[name][key]:
                best[name] = result
    return best


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result):
    """Print a worker's result as the JSON last line."""
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)


def gemm_rate(n=1024, repeats=20):
    """float32 GEMM rate of NumPy's BLAS on this machine, in FLOP/s (best of ``repeats``)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, a, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, a, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def table(rows, headers):
    """Print a plain text table."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(f"{str(c):<{w}}" for c, w in zip(row, widths)))

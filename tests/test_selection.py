"""The selection helpers (sparana.sparsity._selection) against plain sorts and loops."""

import math

import numpy as np
import pytest

from sparana.sparsity import _selection as sel


def _with_nans(rng, shape, fraction=0.2):
    values = rng.normal(size=shape)
    values[rng.random(shape) < fraction] = np.nan
    return values


def _reference_k(values, ratio, key, largest):
    """Flat indices of the k chosen entries by a plain Python sort (ties: first position)."""
    flat = values.reshape(-1)
    candidates = [i for i in range(flat.size) if not math.isnan(flat[i])]
    k = math.floor(round(ratio * len(candidates), 9))
    ordered = sorted(candidates, key=lambda i: (-key(flat[i]) if largest else key(flat[i]), i))
    return set(ordered[:k])


@pytest.mark.parametrize("function, key, largest", [
    (sel.get_k_min, float, False),
    (sel.get_k_max, float, True),
    (sel.get_k_smallest, abs, False),
    (sel.get_k_biggest, abs, True),
])
@pytest.mark.parametrize("shape", [(7, 9), (40,)])
def test_k_helpers_match_a_plain_sort(rng, function, key, largest, shape):
    values = _with_nans(rng, shape)
    values.reshape(-1)[:6] = [0.5, -0.5, 0.5, -0.5, 0.5, 0.5]  # ties, broken by position
    for ratio in (0.0, 0.1, 0.29, 0.5, 1.0):
        mask = function(values, ratio)
        assert mask.shape == values.shape and mask.dtype == bool
        assert set(np.flatnonzero(mask)) == _reference_k(values, ratio, key, largest)


def test_count_is_floor_of_ratio_times_candidates_and_zero_selects_nothing():
    values = np.arange(100.0)
    assert sel.selection_count(values, 0.29) == 29  # not 28 from 0.29 * 100 = 28.999...
    assert sel.get_k_biggest(values, 0.0).sum() == 0  # bug 35: k = 0 selected everything
    assert sel.get_k_max(values, 0.004).sum() == 0
    values[:50] = np.nan
    assert sel.get_k_smallest(values, 0.5).sum() == 25
    assert not sel.get_k_smallest(values, 1.0)[:50].any()


def test_lists_give_one_mask_per_array(rng):
    arrays = [rng.normal(size=(4, 5)), rng.normal(size=(3,))]
    masks = sel.get_k_biggest(arrays, 0.5)
    assert [m.shape for m in masks] == [(4, 5), (3,)]
    assert [int(m.sum()) for m in masks] == [10, 1]
    random = sel.get_uniform(arrays, 0.5, rng=3)
    assert [int(m.sum()) for m in random] == [10, 1]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="ratio"):
        sel.get_k_min(np.ones(4), 1.5)
    with pytest.raises(ValueError, match="ratio"):
        sel.get_k_min(np.ones(4), -0.1)
    with pytest.raises(ValueError, match="std"):
        sel.get_normal_high(np.ones(4), 0.5, -1.0)
    with pytest.raises(ValueError, match="std"):
        sel.get_normal_low(np.ones(4), 0.5, float("inf"))
    with pytest.raises(TypeError, match="numeric"):
        sel.get_k_max(np.array(["a", "b"]), 0.5)
    with pytest.raises(ValueError, match="2-D"):
        sel.get_maxs(np.ones(3))


def _rejection_ranks(rng, n, k, std):
    """The original's loop: rank = floor(|N(0, n*std/2)|), rejecting duplicates and ranks >= n."""
    found = []
    while len(found) < k:
        rank = int(math.floor(abs(rng.normal(0, n * std / 2))))
        if rank < n and rank not in found:
            found.append(rank)
    return found


def test_half_normal_ranks_have_the_original_distribution():
    n, k, std, trials = 12, 4, 0.25, 3000
    rng = np.random.default_rng(0)
    ours = np.zeros(n)
    original = np.zeros(n)
    for _ in range(trials):
        ranks = sel.half_normal_ranks(n, k, std, rng)
        assert len(set(ranks.tolist())) == k and ranks.max() < n
        ours[ranks] += 1
        original[_rejection_ranks(rng, n, k, std)] += 1
    # Per-rank inclusion frequencies agree within sampling noise (binomial sd <= 0.0092).
    assert np.abs(ours / trials - original / trials).max() < 0.045
    assert ours[0] > ours[n // 2] > ours[-1]


def test_half_normal_ranks_terminate_at_the_limits():
    assert sel.half_normal_ranks(10**6, 1000, 1e-12, 0).tolist() == list(range(1000))  # bug 36: looped forever
    assert sel.half_normal_ranks(50, 50, 1e-9, 0).tolist() == list(range(50))
    with np.errstate(all="raise"):  # no overflow on the way
        assert sel.half_normal_ranks(1000, 10, 1e-300, 0).tolist() == list(range(10))
    assert sel.half_normal_ranks(50, 0, 0.1, 0).size == 0
    wide = np.zeros(20)
    rng = np.random.default_rng(1)
    for _ in range(2000):
        wide[sel.half_normal_ranks(20, 2, 1e9, rng)] += 1
    assert wide.min() > 150 and wide.max() < 250  # nearly uniform: 200 each
    with pytest.raises(ValueError):
        sel.half_normal_ranks(5, 6, 0.1)


def test_normal_high_and_low_are_biased_and_exact_with_zero_std(rng):
    values = rng.permutation(400).astype(float)
    assert np.array_equal(sel.get_normal_high(values, 0.1, 0.0, rng=0), values >= 360)
    assert np.array_equal(sel.get_normal_low(values, 0.1, 1e-9, rng=0), values < 40)
    high = sel.get_normal_high(values, 0.1, 0.1, rng=0)
    low = sel.get_normal_low(values, 0.1, 0.1, rng=0)
    assert high.sum() == low.sum() == 40
    assert values[high].mean() > 300 and values[low].mean() < 100
    split = sel.get_normal_split(values, 0.1, 0.02, rng=0)
    assert split.sum() == 40 and (values[split] < 100).sum() == 20 and (values[split] >= 300).sum() == 20


def test_uniform_and_ratio_biggest(rng):
    values = _with_nans(rng, (30, 30))
    mask = sel.get_uniform(values, 0.3, rng=0)
    assert mask.sum() == math.floor(0.3 * (~np.isnan(values)).sum()) and not mask[np.isnan(values)].any()
    assert np.array_equal(mask, sel.get_uniform(values, 0.3, rng=0))
    part = sel.get_ratio_biggest(values, 0.2, 0.5, rng=0)
    top = sel.get_k_biggest(values, 0.2)
    assert part.sum() == top.sum() // 2 and not (part & ~top).any()


def test_maxs_and_sign_helpers():
    values = np.array([[1.0, 3.0, 3.0], [np.nan, -2.0, -1.0], [np.nan, np.nan, np.nan], [0.0, -1.0, 2.0]])
    assert np.array_equal(np.argwhere(sel.get_maxs(values)), [[0, 1], [1, 2], [3, 2]])
    assert np.array_equal(np.argwhere(sel.get_zeros(values)), [[3, 0]])
    assert np.array_equal(np.argwhere(sel.get_negatives(values)), [[1, 1], [1, 2], [3, 1]])
    assert np.array_equal(np.argwhere(sel.get_positives(values)), [[0, 0], [0, 1], [0, 2], [3, 2]])


def test_ranked_orders_candidates_with_ties_by_position():
    values = np.array([2.0, np.nan, -3.0, 2.0, 1.0])
    assert sel.ranked(values).tolist() == [2, 4, 0, 3]
    assert sel.ranked(values, descending=True).tolist() == [0, 3, 4, 2]
    assert sel.ranked(values, descending=True, magnitude=True).tolist() == [2, 0, 3, 4]

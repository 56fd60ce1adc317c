"""IDX reading and writing: round trips and every malformed-file error."""

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparana.data import IdxFormatError, read_idx, write_idx

DTYPES = ["u1", "i1", "i2", "i4", "f4", "f8"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a.idx", array, compress=compress)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.flags.writeable
    np.testing.assert_array_equal(back, array)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(st.sampled_from([np.dtype(d) for d in DTYPES]),
                  hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)))
def test_round_trip_property(tmp_path_factory, array):
    path = write_idx(tmp_path_factory.mktemp("idx") / "x", array)
    np.testing.assert_array_equal(read_idx(path), array)


def test_canonical_header_bytes(tmp_path):
    path = write_idx(tmp_path / "labels", np.array([3, 1, 4], np.uint8))
    assert path.read_bytes() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x03\x01\x04"
    big = write_idx(tmp_path / "big", np.array([1], np.int32)).read_bytes()
    assert big[2] == 0x0C and big[-4:] == b"\x00\x00\x00\x01"  # big-endian data


def test_gzip_detected_by_magic_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_no_suffix = write_idx(tmp_path / "plain-name", array, compress=True)
    plain_gz_suffix = write_idx(tmp_path / "looks.gz", array)
    np.testing.assert_array_equal(read_idx(gz_no_suffix), array)
    np.testing.assert_array_equal(read_idx(plain_gz_suffix), array)


GOOD = b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03" + bytes(range(6))
BAD_FILES = {
    "bad-magic": (b"\x01" + GOOD[1:], "two zero bytes"),
    "bad-type": (GOOD[:2] + b"\x07" + GOOD[3:], "type code 0x07"),
    "no-dims": (b"\x00\x00\x08\x00", "at least one dimension"),
    "short-magic": (b"\x00\x00", "4-byte"),
    "truncated-header": (GOOD[:10], "truncated header"),
    "truncated-data": (GOOD[:-1], "truncated"),
    "trailing": (GOOD + b"\x00", "trailing bytes"),
}


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_files_raise_naming_file(tmp_path, case, compress):
    payload, expected_text = BAD_FILES[case]
    path = tmp_path / f"{case}-file"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(IdxFormatError, match=expected_text) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_sizes_in_message(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(GOOD[:-2])
    expected = r"shape \(2, 3\) of uint8 needs 6 data bytes, found 4"
    with pytest.raises(IdxFormatError, match=expected):
        read_idx(path)


def test_corrupt_gzip_stream(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(GOOD)[:-6])
    with pytest.raises(IdxFormatError, match="corrupt gzip") as info:
        read_idx(path)
    assert "broken.gz" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_write_rejects_unsupported(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"shape \(\)"):
        write_idx(tmp_path / "x", np.uint8(3))

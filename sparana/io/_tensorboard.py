"""TensorBoard scalars without TensorFlow or PyTorch: a small event-file writer and reader.

An event file is a sequence of TFRecords, each holding one ``Event`` protocol
buffer. A record is framed as

    uint64 length | uint32 masked CRC-32C of the length | data | uint32 masked CRC-32C of the data

(little-endian). The messages written here are small enough to encode by hand
(field numbers from TensorFlow's ``event.proto`` and ``summary.proto``)::

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

TensorBoard reads every file whose name contains ``tfevents`` under its
``--logdir``; each folder holding such files is one "run". The first event of
a file carries ``file_version = "brain.Event:2"``, as TensorFlow's writers do.

    writer = ScalarWriter("results/tensorboard/run")
    writer.add_scalars({"loss": 0.3, "accuracy": 0.9}, step=0)
    read_scalars("results/tensorboard")   # {"run": {"loss": [(0, 0.3, wall_time)], ...}}
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

FILE_VERSION = "brain.Event:2"
_FILE_NUMBERS = itertools.count()  # two writers of one process in one folder, in the same second


# ------------------------------------------------------------------ CRC-32C
def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):  # the reflected Castagnoli polynomial
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """TFRecord's masked CRC: rotated right by 15 bits plus a constant (a CRC of data holding CRCs is weak)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data):
    """One TFRecord holding ``data``."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def records(stream):
    """The data of every TFRecord in a binary ``stream``; a damaged record raises ValueError."""
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12:
            raise ValueError("truncated TFRecord header")
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc:
            raise ValueError("TFRecord length fails its CRC")
        data, footer = stream.read(length), stream.read(4)
        if len(data) < length or len(footer) < 4:
            raise ValueError("truncated TFRecord")
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise ValueError("TFRecord data fails its CRC")
        yield data


# ---------------------------------------------------------- protocol buffers
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(value):
    value &= (1 << 64) - 1  # int64: a negative number is sent as its 64-bit two's complement
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def _bytes_field(field, payload):
    return _key(field, _BYTES) + _varint(len(payload)) + payload


def encode_event(wall_time, step=0, scalars=None, file_version=None):
    """An ``Event`` with a ``Summary`` of ``scalars`` ({tag: value}) or a ``file_version``."""
    out = _key(1, _FIXED64) + struct.pack("<d", wall_time) + _key(2, _VARINT) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + _key(2, _FIXED32)
                                       + struct.pack("<f", float(value)))
                          for tag, value in scalars.items())
        out += _bytes_field(5, values)
    return out


def _fields(data):
    """(field number, value) of every field of a message: ints, or bytes for fixed-size and length-delimited."""
    position = 0

    def varint():
        nonlocal position
        value, shift = 0, 0
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            yield field, varint()
            continue
        size = {_FIXED64: 8, _FIXED32: 4}.get(wire)
        if size is None:
            if wire != _BYTES:
                raise ValueError(f"unsupported protocol buffer wire type {wire}")
            size = varint()
        yield field, data[position:position + size]
        position += size


def decode_event(data):
    """{"wall_time", "step", "file_version" (or None), "scalars": {tag: value}} of an encoded ``Event``."""
    event = {"wall_time": 0.0, "step": 0, "file_version": None, "scalars": {}}
    for field, value in _fields(data):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value - (1 << 64) if value >> 63 else value
        elif field == 3:
            event["file_version"] = value.decode()
        elif field == 5:
            for summary_field, entry in _fields(value):
                if summary_field != 1:
                    continue
                parts = dict(_fields(entry))
                if 1 in parts and 2 in parts:  # a tag and a simple_value: a scalar
                    event["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
    return event


# -------------------------------------------------------------------- files
class ScalarWriter:
    """Appends scalars to a new event file in ``folder`` (one TensorBoard run).

    Every event is appended and the file closed again at once, so that a
    TensorBoard watching the run sees each step as it comes and nothing
    needs closing. TensorBoard stores scalars as float32: a value read back
    equals the written one to about 7 significant digits.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a run's files in name order: the time first, then a counter that sorts as text
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_NUMBERS):06d}"
        self.path = self.folder / name
        self._append(encode_event(time.time(), file_version=FILE_VERSION), mode="xb")

    def _append(self, event, mode="ab"):
        with open(self.path, mode) as handle:
            handle.write(frame(event))

    def add_scalars(self, scalars, step, wall_time=None):
        """Write ``scalars`` ({tag: number}, None values skipped) as one event at ``step``."""
        values = {tag: value for tag, value in scalars.items() if value is not None}
        if values:
            self._append(encode_event(time.time() if wall_time is None else wall_time, step, values))

    def add_scalar(self, tag, value, step, wall_time=None):
        self.add_scalars({tag: value}, step, wall_time)


def read_events(path):
    """Every event of one event file, decoded (see :func:`decode_event`)."""
    with open(path, "rb") as stream:
        return [decode_event(data) for data in records(stream)]


def read_scalars(log_dir):
    """{run: {tag: [(step, value, wall_time), ...]}} of every event file under ``log_dir``.

    A run is an event file's folder relative to ``log_dir`` ("." for
    ``log_dir`` itself); a run's files are read in name order (their names
    start with the time they were opened), as TensorBoard does.
    """
    log_dir = Path(log_dir)
    runs = {}
    for path in sorted(log_dir.rglob("*tfevents*")):
        tags = runs.setdefault(path.parent.relative_to(log_dir).as_posix(), {})
        for event in read_events(path):
            for tag, value in event["scalars"].items():
                tags.setdefault(tag, []).append((event["step"], value, event["wall_time"]))
    return runs

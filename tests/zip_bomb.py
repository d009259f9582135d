"""A small torch-format zip bomb: a ~2 MB ``.ckpt`` whose one tensor record inflates to 2 GiB.

Used by ``tests/test_torch_io.py``; also a script that loads the bomb (or, with ``--stored_mib``,
an honest stored checkpoint of one tensor that size) with ``io.torch_zip`` in this process
and prints what it cost (peak RSS, seconds, outcome) as JSON::

    python tests/zip_bomb.py [--inflated_gib 2] [--stored_mib N]
    python tests/zip_bomb.py --load FILE      # only load FILE (the way tests measure memory)

The archive is written by hand (the zipfile module cannot store pre-compressed data): ``data.pkl``
declares one float32 tensor whose storage ``data/0`` is a raw-deflate stream of zeros. A deflate
segment ended by a full flush does not refer back to earlier data, so one compressed 16 MiB segment
repeated N times is a valid stream of N x 16 MiB zeros; this builds the file in well under a second.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SEGMENT = 16 << 20
# zlib.crc32 of 2 GiB of zero bytes (computed once; the loop below recomputes it for other sizes).
_CRC_2GIB = 0x4DBDF21C


def pickle_one_tensor(numel: int) -> bytes:
    """Protocol-2 pickle of ``{"w": tensor}`` with storage key "0" (torch.save's layout)."""

    def s(x: str) -> bytes:
        raw = x.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def i(x: int) -> bytes:
        return b"J" + struct.pack("<i", x) if x < 2**31 else b"\x8a\x08" + struct.pack("<q", x)

    pid = b"(" + s("storage") + b"ctorch\nFloatStorage\n" + s("0") + s("cpu") + i(numel) + b"t"
    tensor = (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + pid
        + b"Q"
        + i(0)
        + b"("
        + i(numel)
        + b"t("
        + i(1)
        + b"t\x89ccollections\nOrderedDict\n)RtR"
    )
    return b"\x80\x02}(" + s("w") + tensor + b"u."


def _entry(name: str, data: bytes, method: int, size: int, crc: int, offset: int):
    fname = name.encode()
    common = struct.pack("<HHHHHIII", 20, 0, method, 0, 0x21, crc, len(data), size)
    local = b"PK\x03\x04" + common + struct.pack("<HH", len(fname), 0) + fname
    central = (
        b"PK\x01\x02"
        + struct.pack("<H", 20)
        + common
        + struct.pack("<HHHHHII", len(fname), 0, 0, 0, 0, 0, offset)
        + fname
    )
    return local + data, central


def write_zip_bomb(path: str | Path, inflated_bytes: int = 2 << 30) -> Path:
    """Writes the bomb to ``path``: ``inflated_bytes`` (a multiple of 16 MiB, < 4 GiB) of zeros.

    The pickle declares exactly that many bytes (``numel = inflated_bytes / 4`` float32), so the
    tensor metadata and the zip entry agree: only the file size gives the bomb away.
    """
    if inflated_bytes % SEGMENT or not 0 < inflated_bytes < 4 << 30:
        raise ValueError("inflated_bytes must be a multiple of 16 MiB below 4 GiB (no zip64)")
    n = inflated_bytes // SEGMENT
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(SEGMENT)
    segment = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    stream = segment * n + comp.flush()
    if inflated_bytes == 2 << 30:
        crc = _CRC_2GIB
    else:
        crc = 0
        for _ in range(n):
            crc = zlib.crc32(zeros, crc)
    pkl = pickle_one_tensor(inflated_bytes // 4)
    return write_zip(
        path,
        [
            ("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)),
            ("archive/byteorder", b"little", 0, 6, zlib.crc32(b"little")),
            ("archive/data/0", stream, 8, inflated_bytes, crc),
        ],
    )


def write_zip(path: str | Path, records: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip archive of ``(name, raw data, method (0 stored, 8 deflated), declared uncompressed
    size, crc32)`` records, written as given (sizes and CRCs are not checked)."""
    body, central = b"", b""
    for name, data, method, size, c in records:
        local, cent = _entry(name, data, method, size, c, len(body))
        body += local
        central += cent
    eocd = b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", 0, 0, len(records), len(records), len(central), len(body), 0
    )
    path = Path(path)
    path.write_bytes(body + central + eocd)
    return path


def write_stored_checkpoint(path: str | Path, nbytes: int) -> Path:
    """An honest torch-format checkpoint (stored records, as torch.save writes) holding one
    float32 tensor of ``nbytes`` bytes (values 0, 1, 2, ... mod 2**24)."""
    import zipfile

    import numpy as np

    numel = nbytes // 4
    data = (np.arange(numel, dtype=np.int64) % (1 << 24)).astype("<f4")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle_one_tensor(numel))
        zf.writestr("archive/byteorder", "little")
        with zf.open("archive/data/0", "w") as f:
            f.write(memoryview(data).cast("B"))
    return Path(path)


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` (Linux; reset at exec, unlike
    ``ru_maxrss``, which a child inherits from the parent it was forked from), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(path: Path) -> dict:
    import time

    from wfvae_jax.io import torch_zip  # imported before the baseline is taken

    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    try:
        tree = torch_zip.load_torch_pickle(path)
        outcome = f"loaded {tree['w'].nbytes:,} bytes"
    except Exception as e:  # noqa: BLE001 - the outcome is what we report
        outcome = f"{type(e).__name__}: {e}"
    return {
        "file_bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mib_before_load": round(rss0),
        "peak_rss_mib": round(peak_rss_mib()),
        "outcome": outcome,
    }


if __name__ == "__main__":
    import argparse
    import json
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--inflated_gib", type=int, default=2)
    ap.add_argument("--stored_mib", type=int, default=0, help="measure an honest file instead")
    ap.add_argument("--load", default=None, help="measure loading this file (written elsewhere)")
    args = ap.parse_args()
    if args.load:
        print(json.dumps(_measure(Path(args.load)), indent=2))
        sys.exit()
    import subprocess

    with tempfile.TemporaryDirectory() as d:
        if args.stored_mib:
            path = write_stored_checkpoint(Path(d) / "stored.ckpt", args.stored_mib << 20)
        else:
            path = write_zip_bomb(Path(d) / "bomb.ckpt", args.inflated_gib << 30)
        # A fresh process, so that writing the file does not count.
        subprocess.run([sys.executable, __file__, "--load", str(path)], check=True)

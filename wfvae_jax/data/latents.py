"""The latent dataset format written by ``wfvae encode-dataset``, and its reader.

This module is the one owner of the format: file names, record encoding, shard commit protocol,
manifest, and the grain reader :class:`LatentSource` with the :class:`SampleLatent` transform.

Layout of an output directory ``OUT``::

    OUT/manifest.json               what was encoded (see below); written by process 0
    OUT/latents-00000.array_record  shard 0: the records of videos [0, V) (V = videos_per_shard)
    OUT/latents-00000.json          shard 0's commit marker: counts, skipped videos, sha256
    OUT/latents-*.HOST.PID.tmp      a shard (or marker) being written by one process; never read
    OUT/.wfvae_jax.lock             held by the run writing OUT (``wfvae_jax.io.folder_lock``)

A shard is written to ``NAME.HOST.PID.tmp`` (a name no other process uses) and renamed to
``NAME`` once complete; its ``.json`` marker is written (also via a ``.tmp`` + rename) after
that, so a shard counts as finished exactly when its marker exists, holds the run's
``spec_hash`` and names a data file of the recorded size. A run killed at any point leaves
finished shards intact, and at most one ``.tmp`` file per process and an unmarked data file,
which the next run overwrites (it deletes the ``.tmp`` files first).

Records (ArrayRecord, ``group_size:1``, uncompressed, so any record is one read): a msgpack map
(``flax.serialization.msgpack_serialize``) with
  - ``mean``, ``logvar`` (``store="mean_logvar"``) or ``latent`` (``store="sample"``):
    ``(t, h, w, C)`` channels-last arrays in the storage dtype (float32, float16 or bfloat16);
    ``t = latent_frames(num_frames)``, ``h, w = H / 8, W / 8``, ``C = latent_dim``;
  - ``video`` (str): the source, relative to the manifest's ``source.root`` for a folder, or
    ``tfds:NAME/SPLIT[i]``; ``start`` (int): first decoded frame of the clip; ``frame_stride``
    (int): decoded frames between clip frames; ``fps`` (float): the source's frame rate (0 when
    unknown, e.g. TFDS), so the clip's rate is ``fps / frame_stride``; ``size`` ([H, W]): the
    source's frame size before resizing. Records of a shard are in (video, start) order.

``manifest.json``: ``format``/``version``; ``spec`` (model config, ``config_hash`` and
``params_hash`` of the encoder's parameters, the clip spec, source identity, encode settings)
and its ``spec_hash``; ``scale``/``shift`` (``latent_dim`` entries each, ``null`` without
statistics; normalised ``= (z - shift) * scale``); ``latent_shape``; ``complete``; ``shards``
(file, videos range, records); ``num_records``; ``skipped`` (video, reason), ``skipped_counts``;
``run`` (processes, devices, batch size).

Sampled latents (``store="sample"``) use ``jax.random.normal`` under the key
:func:`sample_key_data` ``(seed, video, start)``, a function of the clip's identity only, so a
clip's sample does not depend on batching, device or process count, or resuming.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import grain
import jax.numpy as jnp
import numpy as np
from flax import serialization

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.core.latents import WRITE_CONFIG_COMMAND, latent_scale_shift, normalize_latents
from wfvae_jax.io.folder_lock import tmp_name

FORMAT = "wfvae_jax.latents"
VERSION = 1
MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"
# group_size:1 makes every record its own chunk (random access reads one record); latents are
# float noise to a compressor, so compression would cost writer time for a few percent.
WRITER_OPTIONS = "group_size:1,uncompressed"
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": jnp.bfloat16}
STORES = ("mean_logvar", "sample")
LATENT_KEYS = ("mean", "logvar", "latent")
_SHARD_RE = re.compile(r"^latents-(\d{5,})\.json$")
_TMP_PATTERNS = ("latents-*" + TMP_SUFFIX, MANIFEST + "*" + TMP_SUFFIX)


def storage_dtype(name: str) -> np.dtype:
    """The numpy dtype for a ``--storage_dtype`` name; raises ValueError listing the choices."""
    if name not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {tuple(STORAGE_DTYPES)}, got {name!r}")
    return np.dtype(STORAGE_DTYPES[name])


def shard_name(index: int) -> str:
    """``latents-00007.array_record``: the data file of shard ``index``."""
    return f"latents-{index:05d}.array_record"


def marker_name(index: int) -> str:
    """``latents-00007.json``: the commit marker of shard ``index``."""
    return f"latents-{index:05d}.json"


# ------------------------------------------------------------------------------------ records


def encode_record(latents: Mapping[str, np.ndarray], source: Mapping[str, Any]) -> bytes:
    """One record: ``latents`` (``mean``/``logvar`` or ``latent`` arrays, stored as given) plus
    the ``source`` fields ``video, start, frame_stride, fps, size``. Deterministic bytes."""
    record: dict[str, Any] = {k: np.ascontiguousarray(v) for k, v in latents.items()}
    record.update(
        video=str(source["video"]),
        start=int(source["start"]),
        frame_stride=int(source["frame_stride"]),
        fps=float(source["fps"]),
        size=[int(s) for s in source["size"]],
    )
    return serialization.msgpack_serialize(record)


def decode_record(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_record`; latent arrays come back as float32 ``(t, h, w, C)``,
    ``size`` as int64 ``(2,)``."""
    record = serialization.msgpack_restore(data)
    for key in LATENT_KEYS:
        if key in record:
            record[key] = np.asarray(record[key], np.float32)
    record["size"] = np.asarray(record["size"], np.int64)
    return record


def sample_key_data(seed: int, video: str, start: int) -> np.ndarray:
    """The threefry2x32 key data (uint32 ``(2,)``) of a clip's posterior sample.

    ``sha256(f"{seed}:{start}:{video}")``'s first 8 bytes, little-endian. Reproduce a stored
    sample as ``mean + exp(logvar / 2) * jax.random.normal(jax.random.wrap_key_data(k,
    impl="threefry2x32"), mean.shape)`` with the float32 ``mean``/``logvar`` of the clip.
    """
    digest = hashlib.sha256(f"{int(seed)}:{int(start)}:{video}".encode()).digest()
    return np.frombuffer(digest[:8], "<u4").copy()


# ------------------------------------------------------------------------------------ files


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON to ``path`` via a per-process ``.tmp`` + fsync + rename (never
    half-read)."""
    tmp = tmp_name(path)
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def read_manifest(out: str | os.PathLike) -> dict | None:
    """``OUT/manifest.json`` as a dict, or None when absent."""
    path = os.path.join(os.fspath(out), MANIFEST)
    if not os.path.exists(path):
        return None
    manifest = _read_json(path)
    if manifest is None:
        raise ValueError(f"{path} is not valid JSON; remove it or pass --overwrite")
    return manifest


def write_manifest(out: str | os.PathLike, manifest: dict) -> None:
    """Atomically writes ``OUT/manifest.json``."""
    write_json_atomic(os.path.join(os.fspath(out), MANIFEST), manifest)


def read_marker(out: str | os.PathLike, index: int) -> dict | None:
    """Shard ``index``'s commit marker if the shard is finished (marker present and readable,
    data file present with the recorded size), else None."""
    out = os.fspath(out)
    marker = _read_json(os.path.join(out, marker_name(index)))
    if marker is None:
        return None
    try:
        size = os.path.getsize(os.path.join(out, shard_name(index)))
    except OSError:
        return None
    return marker if size == marker.get("bytes") else None


def list_markers(out: str | os.PathLike) -> dict[int, dict]:
    """Every finished shard under ``out``: ``{index: marker}`` in index order (see
    :func:`read_marker`)."""
    found = {}
    for path in glob.glob(os.path.join(glob.escape(os.fspath(out)), "latents-*.json")):
        m = _SHARD_RE.match(os.path.basename(path))
        if m and (marker := read_marker(out, int(m.group(1)))) is not None:
            found[int(m.group(1))] = marker
    return dict(sorted(found.items()))


def remove_outputs(out: str | os.PathLike) -> int:
    """Deletes this format's files under ``out`` (shards, markers, manifest, their ``.tmp``s), not
    a user's own ``*.tmp``. Safe from several processes at once. Returns the number removed."""
    out = os.fspath(out)
    patterns = ("latents-*.array_record", "latents-*.json", MANIFEST, *_TMP_PATTERNS)
    removed = 0
    for pattern in patterns:
        for path in glob.glob(os.path.join(glob.escape(out), pattern)):
            try:
                os.remove(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def remove_tmp_files(out: str | os.PathLike) -> int:
    """Deletes the ``.tmp`` files this format's writers leave when killed (call it only while
    holding ``out``'s folder lock: then no live writer owns one). Returns the number removed."""
    out = os.fspath(out)
    removed = 0
    for pattern in _TMP_PATTERNS:
        for path in glob.glob(os.path.join(glob.escape(out), pattern)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed += 1
    return removed


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Writes one shard: records go to ``NAME.tmp``; :meth:`commit` makes it final.

    Use one writer per shard and process (``encode_dataset`` gives each shard to exactly one
    process, and holds the folder's lock so that no other run writes it).
    """

    def __init__(self, out: str | os.PathLike, index: int):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.out, self.index = os.fspath(out), int(index)
        self.path = os.path.join(self.out, shard_name(self.index))
        self._tmp = tmp_name(self.path)
        self._writer = ArrayRecordWriter(self._tmp, WRITER_OPTIONS)
        self.num_records = 0

    def write(self, record: bytes) -> None:
        self._writer.write(record)
        self.num_records += 1

    def commit(self, info: Mapping[str, Any]) -> dict:
        """Closes, fsyncs and renames the data file, then writes the marker (``info`` plus
        ``shard``, ``file``, ``records``, ``bytes``, ``sha256``). Returns the marker."""
        self._writer.close()
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        marker = {
            **info,
            "shard": self.index,
            "file": shard_name(self.index),
            "records": self.num_records,
            "bytes": os.path.getsize(self.path),
            "sha256": _sha256_file(self.path),
        }
        write_json_atomic(os.path.join(self.out, marker_name(self.index)), marker)
        return marker

    def discard(self) -> None:
        """Closes and deletes the unfinished data file (only committed shards count)."""
        self._writer.close()
        os.remove(self._tmp)


# ------------------------------------------------------------------------------------ reader


def _num_records(path: str) -> int:
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        reader = ArrayRecordReader(path)
        n = int(reader.num_records())
        reader.close()
    except RuntimeError as e:
        raise ValueError(f"latent shard {path} cannot be read: {e or type(e).__name__}") from None
    return n


def check_shards(out: str, manifest: dict, verify: bool = False) -> list[tuple[str, int]]:
    """``[(path, records)]`` of the manifest's shards, checked as :class:`LatentSource` says.

    Raises FileNotFoundError (a listed shard is missing) or ValueError (:class:`LatentSource`).
    """
    from wfvae_jax.io.confined import confined_file

    shards, num_shards = manifest.get("shards"), manifest.get("num_shards")
    per_shard = (manifest.get("spec") or {}).get("videos_per_shard")
    if not isinstance(shards, list) or not isinstance(num_shards, int):
        raise ValueError(f"{out}/{MANIFEST} has no list of shards; it was edited or damaged")
    seen: set[int] = set()
    found = []
    for entry in shards:
        name = entry.get("file") if isinstance(entry, dict) else None
        m = re.fullmatch(r"latents-(\d{5,})\.array_record", name) if isinstance(name, str) else None
        index = int(m.group(1)) if m else -1
        videos = entry.get("videos") if isinstance(entry, dict) else None
        if (
            m is None
            or name != shard_name(index)
            or index in seen
            or index >= num_shards
            or (isinstance(per_shard, int) and (videos or [None])[0] != index * per_shard)
        ):
            why = "listed twice" if index in seen else "not a shard of this numbering"
            raise ValueError(
                f"{out}/{MANIFEST} lists the shard {name!r} ({why}; shards are "
                f"latents-NNNNN.array_record, NNNNN < {num_shards}, each once); the manifest "
                "was edited or forged"
            )
        seen.add(index)
        path = confined_file(out, name, "latent shard")
        size, records = os.path.getsize(path), entry.get("records")
        if size != entry.get("bytes") or not isinstance(records, int) or records < 0:
            raise ValueError(
                f"latent shard {path} is {size} bytes, the manifest says {entry.get('bytes')} "
                "(a shard replaced or damaged after the encoding; rerun encode_dataset)"
            )
        if verify and entry.get("sha256") and _sha256_file(path) != entry["sha256"]:
            raise ValueError(
                f"latent shard {path} does not match the sha256 in {MANIFEST} (damaged or "
                "replaced after the encoding; rerun encode_dataset with --overwrite)"
            )
        found.append((path, records))
    return found


class LatentSource:
    """grain ``RandomAccessDataSource`` over an ``encode_dataset`` output directory.

    Item ``i`` is a dict: ``mean`` and ``logvar`` (or ``latent`` for ``store="sample"``) as float32
    ``(t, h, w, C)``; ``video`` (str), ``start``, ``frame_stride`` (int), ``fps`` (float),
    ``size`` (int64 ``(2,)``, the source's frame size). Items are in shard order, and within a
    shard in (video, start) order. ``manifest``, ``scale``/``shift`` (float32 ``(C,)``) and
    ``latent_shape`` come from ``OUT/manifest.json``; :meth:`sample_transform` gives the
    transform that draws a sample and normalises it.

    The manifest is not trusted: every shard it lists must be named ``latents-NNNNN.array_record``
    by its own number (each once, below ``num_shards``, its videos where that number puts them),
    be a regular file inside ``out`` (no ``..``, absolute path or symlink out of it; see
    :mod:`wfvae_jax.io.confined`) of the recorded size, and the counts must add up. Each record's
    latent arrays must have ``latent_shape``. ``verify=True`` also checks each shard's sha256
    (reads every byte, ~2 s per GiB on one CPU core: off by default; docs/latents.md).

    Raises:
      FileNotFoundError: ``out`` has no manifest, or a listed shard is missing.
      ValueError: a manifest of another format/version, or an encoding that has not finished
        (rerun the same ``encode_dataset`` command to complete it); a shard entry that breaks
        the rules above (naming it); with ``verify``, a sha256 mismatch. Reading a record raises
        ValueError naming the shard file when it is corrupt or of another shape.
    """

    def __init__(self, out: str | os.PathLike, verify: bool = False):
        self.out = os.path.abspath(os.fspath(out))
        manifest = read_manifest(self.out)
        if manifest is None:
            raise FileNotFoundError(
                f"{os.path.join(self.out, MANIFEST)} not found: not an encode_dataset output"
            )
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(
                f"{self.out} holds format {manifest.get('format')!r} version "
                f"{manifest.get('version')!r}; this reader reads {FORMAT!r} version {VERSION}"
            )
        if not manifest.get("complete"):
            raise ValueError(
                f"the encoding in {self.out} has not finished; rerun the same encode_dataset "
                "command to complete it (finished shards are kept)"
            )
        self.manifest = manifest
        # None: encoded with a config that had no per-channel statistics (see ``config``).
        stats = (manifest.get("scale"), manifest.get("shift"))
        self.scale, self.shift = (
            (None, None) if None in stats else (np.asarray(s, np.float32) for s in stats)
        )
        self.latent_shape = tuple(manifest["latent_shape"])
        self.store = manifest["spec"]["encode"]["store"]
        shards = check_shards(self.out, manifest, verify=verify)
        self._paths = [path for path, records in shards if records > 0]
        self._ends = np.cumsum([records for _, records in shards if records > 0])
        self._len = int(manifest["num_records"])
        if int(sum(r for _, r in shards)) != self._len:
            raise ValueError(
                f"{self.out}: the manifest's shards hold {sum(r for _, r in shards)} records but "
                f"its num_records says {self._len}"
            )
        try:  # array_record's errors name no file: find the shard that fails
            self._source = grain.sources.ArrayRecordDataSource(self._paths) if self._paths else None
        except (RuntimeError, ValueError, OSError) as e:
            for path in self._paths:
                _num_records(path)
            raise ValueError(f"{self.out}: the shards cannot be read: {e}") from None
        if self._source is not None and len(self._source) != self._len:
            bad = [f"{p} holds {n}" for p, r in shards if r and (n := _num_records(p)) != r]
            raise ValueError(
                f"{self.out}: the shards hold {len(self._source)} records, the manifest "
                f"says {self._len} ({'; '.join(bad[:3])})"
            )

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, record_key: int) -> dict[str, Any]:
        if self._source is None:
            raise IndexError(f"{self.out} holds no records")
        key = int(record_key)
        try:
            record = decode_record(self._source[key])
        except (RuntimeError, ValueError, OSError, KeyError, TypeError) as e:
            raise ValueError(
                f"latent shard {self._shard_of(key)}: record {key} cannot be read "
                f"({type(e).__name__}: {e})"
            ) from None
        for k in LATENT_KEYS:
            if k in record and record[k].shape != self.latent_shape:
                raise ValueError(
                    f"latent shard {self._shard_of(key)}: record {key}'s {k} has shape "
                    f"{record[k].shape}, the manifest's latent_shape is {self.latent_shape}"
                )
        return record

    def _shard_of(self, key: int) -> str:
        return self._paths[
            min(int(np.searchsorted(self._ends, key, "right")), len(self._paths) - 1)
        ]

    @property
    def config(self) -> WFVAEConfig:
        """The encoder's :class:`WFVAEConfig` with the manifest's ``scale``/``shift``.

        Raises:
          ValueError: the manifest records no statistics (``null``), naming
            ``wfvae latent-stats --write_config`` and ``sample_transform(config=...)``.
        """
        if self.scale is None:
            raise ValueError(
                f"{self.out} records no per-channel latent statistics; measure them with "
                f"`{WRITE_CONFIG_COMMAND}` and pass that checkpoint's config: "
                "sample_transform(config=wfvae_jax.load_pretrained(DIR)[1])"
            )
        return WFVAEConfig.from_dict(
            {**self.manifest["model_config"], "scale": self.scale, "shift": self.shift}
        )

    def sample_transform(
        self, sample: bool = True, config: WFVAEConfig | None = None
    ) -> SampleLatent:
        """:class:`SampleLatent` normalising with ``config``'s ``scale``/``shift`` (default:
        :attr:`config`, this dataset's manifest). Pass the checkpoint's config after
        ``wfvae latent-stats --write_config`` measured it."""
        return SampleLatent(self.config if config is None else config, sample=sample)

    def __repr__(self) -> str:
        return f"LatentSource(num_records={self._len}, spec_hash={self.manifest['spec_hash'][:12]})"


class SampleLatent(grain.transforms.RandomMap):
    """Item -> ``{"latent": float32 (t, h, w, C), **source fields}``, normalised for diffusion.

    ``z = mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` from grain's per-record rng (the
    posterior sample, as ``DiagonalGaussian.sample``), or ``z = mean`` with ``sample=False``, or
    the stored ``latent`` as is; then ``wfvae_jax.normalize_latents(z, config)``, i.e.
    ``(z - shift) * scale`` per channel (undo with ``wfvae_jax.denormalize_latents`` before
    ``wfvae_jax.decode``).

    Raises:
      ValueError: at construction, a ``config`` whose ``scale``/``shift`` do not have
        ``latent_dim`` entries (or 1), naming ``wfvae latent-stats --write_config``.
    """

    def __init__(self, config: WFVAEConfig, sample: bool = True):
        latent_scale_shift(config)  # a placeholder scale/shift fails here, not in a worker
        self.config = config
        self.sample = bool(sample)

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        out = {k: v for k, v in element.items() if k not in LATENT_KEYS}
        if "latent" in element:
            z = element["latent"]
        elif self.sample:
            eps = rng.standard_normal(element["mean"].shape, dtype=np.float32)
            z = element["mean"] + np.exp(0.5 * element["logvar"]) * eps
        else:
            z = element["mean"]
        out["latent"] = normalize_latents(np.asarray(z, np.float32), self.config)
        return out

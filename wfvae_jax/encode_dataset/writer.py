"""Batches of clips, shard by shard, and the loop that encodes them on the devices while the
results of the previous batch are written (records in input order; a shard is committed once its
last record is written)."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from wfvae_jax.data import latents as fmt
from wfvae_jax.encode_dataset.spec import ClipSpec
from wfvae_jax.inference.sharding import activation_sharding


@dataclasses.dataclass
class Batch:
    """One process's share of a global batch: clips of one shard, padded with empty rows."""

    shard: int
    video: np.ndarray  # (b, T, H, W, 3) float32
    key_data: np.ndarray  # (b, 2) uint32
    sources: list[dict | None]  # per row; None = padding


@dataclasses.dataclass
class ShardEnd:
    shard: int
    videos: tuple[int, int]
    skipped: list[dict]


def events(
    decoded: Iterator[dict], spec: ClipSpec, local_batch: int, seed: int, on_video
) -> Iterator[Batch | ShardEnd]:
    """Batches and shard ends in order; a shard's last batch is padded rather than mixed."""
    h, w = spec.size
    rows: list[tuple[np.ndarray, dict]] = []
    skipped: list[dict] = []

    def flush(shard: int) -> Batch:
        video = np.zeros((local_batch, spec.num_frames, h, w, 3), np.float32)
        keys = np.zeros((local_batch, 2), np.uint32)
        sources: list[dict | None] = [None] * local_batch
        for r, (clip, src) in enumerate(rows):
            video[r], sources[r] = clip, src
            keys[r] = fmt.sample_key_data(seed, src["video"], src["start"])
        rows.clear()
        return Batch(shard, video, keys, sources)

    for position, item in enumerate(decoded):
        if item["position"] != position:  # grain keeps the order; records rely on it
            raise RuntimeError(f"work item {item['position']} arrived at position {position}")
        on_video(item)
        if item["error"]:
            kind = item["error"].split(":", 1)[0].replace(" ", "_")
            skipped.append({"video": item["video"], "kind": kind, "reason": item["error"]})
        for clip, start in zip(item["clips"], item["starts"], strict=True):
            source = {
                "video": item["video"],
                "start": int(start),
                "frame_stride": spec.frame_stride,
                "fps": item["fps"],
                "size": [int(s) for s in item["size"]],
            }
            rows.append((clip, source))
            if len(rows) == local_batch:
                yield flush(item["shard"])
        if item["last"]:
            if rows:
                yield flush(item["shard"])
            yield ShardEnd(item["shard"], tuple(item["shard_videos"]), skipped)
            skipped = []


class Loop:
    """Dispatches batches to the devices and writes the results of the previous one meanwhile.

    ``queue`` holds, in input order, dispatched batches and shard ends; a shard is committed
    once every batch before its end is written.
    """

    def __init__(self, out, step, params, mesh, spec_hash, options, bar):
        self.out, self.step, self.params, self.mesh = out, step, params, mesh
        self.spec_hash, self.options, self.bar = spec_hash, options, bar
        self.queue: collections.deque = collections.deque()
        self.in_flight = 0
        self.writers: dict[int, fmt.ShardWriter] = {}
        self.markers: dict[int, dict] = {}
        self.stats = collections.Counter()
        self.timing = {"input": 0.0, "device": 0.0}

    def next_batch(self, events: Iterator) -> Batch | None:
        t0 = time.perf_counter()
        try:
            for ev in events:
                if isinstance(ev, Batch):
                    return ev
                self.queue.append(ev)
            return None
        finally:
            waited = time.perf_counter() - t0
            self.timing["input"] += waited
            if "first_batch" in self.timing:
                self.timing["steady_input"] = self.timing.get("steady_input", 0.0) + waited

    def dispatch(self, b: Batch, real: bool) -> None:
        # Each process holds whole clips (every H row): only B is split across processes.
        video = jax.make_array_from_process_local_data(activation_sharding(self.mesh), b.video)
        key_data = jax.make_array_from_process_local_data(
            NamedSharding(self.mesh, P("data")), b.key_data
        )
        outputs = self.step(self.params, video, key_data)  # async: decoding goes on meanwhile
        self.stats["steps"] += 1
        if real:
            self.queue.append((outputs, b))
            self.in_flight += 1

    def _fetch(self, outputs: dict) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        if jax.process_count() > 1:
            outputs = multihost_utils.global_array_to_host_local_array(
                outputs, self.mesh, P("data")
            )
        host = {k: np.asarray(v) for k, v in jax.device_get(outputs).items()}
        self.timing["device"] += time.perf_counter() - t0
        return host

    def _write(self, outputs: dict, b: Batch) -> None:
        host = self._fetch(outputs)
        for r, source in enumerate(b.sources):
            if source is None:
                continue
            row = {k: v[r] for k, v in host.items()}
            if not all(np.isfinite(v.astype(np.float32)).all() for v in row.values()):
                raise ValueError(
                    f"non-finite latent for {source['video']} (start {source['start']}) with "
                    f"--dtype {self.options.dtype} --storage_dtype "
                    f"{self.options.storage_dtype}; try float32"
                )
            if b.shard not in self.writers:
                self.writers[b.shard] = fmt.ShardWriter(self.out, b.shard)
            self.writers[b.shard].write(fmt.encode_record(row, source))
            self.stats["records"] += 1
            self.bar.update(1)
        if "first_batch" not in self.timing:  # rates exclude the first step (it compiles)
            self.timing.update(first_batch=time.perf_counter(), first_records=self.stats["records"])

    def _commit(self, end: ShardEnd) -> None:
        writer = self.writers.pop(end.shard, None) or fmt.ShardWriter(self.out, end.shard)
        info = {"spec_hash": self.spec_hash, "videos": list(end.videos), "skipped": end.skipped}
        self.markers[end.shard] = writer.commit(info)
        self.stats["shards"] += 1
        self.bar.set_postfix(shards=self.stats["shards"], skipped=self.stats["skipped"])

    def drain(self, keep_last: bool) -> None:
        """Writes and commits what is queued; with ``keep_last``, stops at the newest batch."""
        while self.queue:
            head = self.queue[0]
            if isinstance(head, tuple) and keep_last and self.in_flight == 1:
                return
            self.queue.popleft()
            if isinstance(head, tuple):
                self.in_flight -= 1
                self._write(*head)
            else:
                self._commit(head)

    def run(self, events: Iterator, empty: Batch, stop_requested=lambda: False) -> bool:
        """Encodes and writes every batch of ``events``; returns True when done.

        ``stop_requested()`` (this process received SIGTERM/SIGINT) is checked at every step and
        agreed on by every process in the step's all-gather. Once any process asks, every process
        writes the batches in flight, commits the shards they complete, discards the shard in
        progress (a rerun redoes it from its first record) and returns False.
        """
        while True:
            b = self.next_batch(events)
            # Every process runs every step: those without clips left send empty batches.
            more, stop = _agree(b is not None, stop_requested())
            if stop:
                self.drain(keep_last=False)
                self.discard_open_shards()
                return False
            if not more:
                break
            self.dispatch(b or empty, real=b is not None)
            self.drain(keep_last=True)
        self.drain(keep_last=False)
        return True

    def discard_open_shards(self) -> None:
        """Drops the shards being written (their ``.tmp`` files): only committed shards count."""
        for shard in sorted(self.writers):
            self.writers.pop(shard).discard()


def _agree(more: bool, stop: bool) -> tuple[bool, bool]:
    """``(any process has a batch, any process asks to stop)``: one small all-gather with
    several processes."""
    if jax.process_count() == 1:
        return more, stop
    flags = multihost_utils.process_allgather(np.asarray([int(more), int(stop)], np.int32))
    more_any, stop_any = np.asarray(flags).reshape(-1, 2).max(axis=0)
    return bool(more_any), bool(stop_any)

"""Metric writers: TensorBoard event files and a JSON-lines log, with clu's ``MetricWriter`` API.

The process that writes (the first) writes every logged value twice: TensorBoard event files in
WORKDIR and one JSON object per line in ``WORKDIR/metrics.jsonl`` (:data:`METRICS_LOG`, for
scripts: ``{"step": 50, "time": 1796609124.2, "train/total_loss": 4026.1, ...}``; a resumed run
appends to it, so steps between the last checkpoint and a kill appear twice). The terminal gets
only short lines (:mod:`wfvae_jax.train.progress`). The other processes of a multi-host run
write log lines (:class:`LoggingWriter`).

clu 0.0.12's ``clu.metric_writers`` package imports TensorFlow at import time (its
``SummaryWriter`` is ``tf.summary``), so without TensorFlow not even its ``LoggingWriter`` can be
imported. :func:`create_default_writer` therefore uses clu's own ``create_default_writer`` when
clu imports (TensorFlow installed), and otherwise these small writers with the same method names
(``write_scalars``, ``write_images``, ``write_texts``, ``flush``, ``close``), writing event files
with the ``tensorboard`` package's ``EventFileWriter`` (no TensorFlow needed). Either way
``tensorboard --logdir WORKDIR`` shows the run.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

METRICS_LOG = "metrics.jsonl"  # in WORKDIR: every logged scalar, one JSON object per write


class LoggingWriter:
    """Writes scalars as one ``INFO`` log line per call (clu ``LoggingWriter`` format)."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(scalars.items()))
        logger.info("[%d] %s", step, values)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        shapes = ", ".join(f"{k}={np.shape(v)}" for k, v in images.items())
        logger.info("[%d] images: %s", step, shapes)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        for k, v in texts.items():
            logger.info("[%d] %s: %s", step, k, v)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLinesWriter:
    """Appends one JSON object per :meth:`write_scalars` call to ``path``: ``{"step", "time"
    (Unix seconds), name: value, ...}``; NaN/inf are written as ``null``. Images and texts are
    left to TensorBoard."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        for k, v in scalars.items():
            v = float(v)
            record[k] = v if math.isfinite(v) else None
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        pass

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        pass

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardWriter:
    """TensorBoard event files in ``logdir`` via ``tensorboard.summary.writer`` (no TensorFlow).

    Scalars are ``simple_value`` summaries; images are uint8 ``(H, W, 3)`` or ``(N, H, W, 3)``
    arrays (float arrays are taken as [0, 1]) stored as PNG image summaries.
    """

    def __init__(self, logdir: str) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(logdir)

    def _add(self, step: int, values: list) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        event = event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
        )
        self._writer.add_event(event)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto import summary_pb2

        values = [
            summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()
        ]
        self._add(step, values)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        from PIL import Image
        from tensorboard.compat.proto import summary_pb2

        values = []
        for tag, img in images.items():
            img = np.asarray(img)
            if img.dtype != np.uint8:
                img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
            batch = img if img.ndim == 4 else img[None]
            for i, frame in enumerate(batch):
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, format="PNG")
                image = summary_pb2.Summary.Image(
                    height=frame.shape[0],
                    width=frame.shape[1],
                    colorspace=frame.shape[2],
                    encoded_image_string=buf.getvalue(),
                )
                name = tag if len(batch) == 1 else f"{tag}/{i}"
                values.append(summary_pb2.Summary.Value(tag=name, image=image))
        self._add(step, values)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        pass  # text summaries need a tensor proto; the log line carries them

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter:
    """Forwards every call to each of ``writers``."""

    def __init__(self, writers: Sequence[Any]) -> None:
        self._writers = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write_scalars(step, scalars)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write_images(step, images)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        for w in self._writers:
            w.write_texts(step, texts)

    def flush(self) -> None:
        for w in self._writers:
            w.flush()

    def close(self) -> None:
        for w in self._writers:
            w.close()


def create_default_writer(logdir: str | None, *, just_logging: bool = False) -> Any:
    """TensorBoard files and :data:`METRICS_LOG` in ``logdir``; only log lines if
    ``just_logging`` (every process but the first of a multi-host run) or ``logdir`` is None.

    TensorBoard goes through clu's ``SummaryWriter`` when ``clu.metric_writers`` imports
    (TensorFlow installed), else :class:`TensorBoardWriter`.
    """
    if just_logging or logdir is None:
        return MultiWriter([LoggingWriter()])
    try:
        from clu import metric_writers

        tensorboard: Any = metric_writers.SummaryWriter(logdir)
    except ImportError:  # clu's writers need TensorFlow
        tensorboard = TensorBoardWriter(logdir)
    return MultiWriter([JsonLinesWriter(os.path.join(logdir, METRICS_LOG)), tensorboard])

"""Metric writers: TensorBoard event files + log lines, with clu's ``MetricWriter`` methods.

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
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


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
    """Log lines + TensorBoard files in ``logdir`` (only log lines if ``just_logging``).

    Use ``just_logging=True`` on every process but the first of a multi-host run. Uses clu's
    ``create_default_writer(..., asynchronous=False)`` when ``clu.metric_writers`` imports.
    """
    try:
        from clu import metric_writers

        return metric_writers.create_default_writer(
            logdir, just_logging=just_logging, asynchronous=False
        )
    except ImportError:  # clu's writers need TensorFlow
        pass
    writers: list[Any] = [LoggingWriter()]
    if not just_logging and logdir is not None:
        writers.append(TensorBoardWriter(logdir))
    return MultiWriter(writers)

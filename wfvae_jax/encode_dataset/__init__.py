"""Encode a video dataset into WF-VAE latents: sharded over devices and hosts, resumable.

Usage::

    wfvae encode-dataset --checkpoint CKPT --videos DIR --out OUT \\
        --num_frames 33 --resolution 256 [--frame_stride 1] [--clips_per_video 1] \\
        [--batch_size B] [--t_chunk C] [--dtype float32|bfloat16] \\
        [--store mean_logvar|sample] [--storage_dtype float32|float16|bfloat16]
    # a prepared TFDS dataset instead of a folder: --tfds NAME [--tfds_split train]
    # one process per host: add --multihost (see wfvae_jax.inference.multihost)

Modules: :mod:`.spec` (the clips and settings a run depends on, and their hash),
:mod:`.manifest` (refusing another encoding, the manifest), :mod:`.inputs` (decoding inputs into
clips in grain workers), :mod:`.writer` (batches, shards, the device loop), :mod:`.run` (the
mesh, the encode step and :func:`encode_dataset`); the command is
``wfvae_jax.commands.encode_dataset``.

Read the output with ``wfvae_jax.data.LatentSource(OUT)``; the format (shards, records, manifest)
is documented in ``wfvae_jax.data.latents``.

What is encoded. Inputs are the sorted video files under ``--videos`` (or the TFDS records in
order); input ``i`` belongs to shard ``i // videos_per_shard``. Each input gives up to
``clips_per_video`` clips: its decoded frames taken every ``frame_stride``-th frame, cut from the
first frame into consecutive clips of ``num_frames`` frames (clip ``k`` starts at decoded frame
``k * num_frames * frame_stride``); frames are resized on the short side to cover
``resolution`` (antialiased) and centre-cropped, as ``read_video(..., crop="center")``. Clip 0 is
the evaluation clip of ``wfvae_jax.eval`` (square resolutions). Inputs that cannot be decoded or
hold no whole clip are skipped, counted and listed with the reason in the manifest.

How. Shard ``s`` belongs to process ``s % process_count``, which decodes its videos in grain
worker processes (``--worker_count``) while the devices encode the previous batch; a batch holds
``batch_size / process_count`` clips of one shard from each process and is sharded over the
mesh of every device (``wfvae_jax.inference.sharding.make_mesh``; ``--mesh data=D,space=S``;
default ``data=`` all devices): clips over ``data``, each clip's height over ``space``.
Long clips go through Causal Cache (``--t_chunk``; default: ``wfvae_jax.auto_t_chunk``; 0: each
clip at once).
Results are written to the shard's temporary file; after the shard's last clip it is renamed and
its marker written. Processes that run out of clips keep stepping with empty batches until all
are done (one small all-gather per step decides when).

Why the output is byte-identical after a kill -9, and for any number of processes: a shard's
content depends only on its inputs and the spec (never on which process or batch a clip ran
in: batches never mix shards, samples use a key derived from the clip's identity), records are
in input order, and finished shards are never rewritten. A restart skips finished shards and
redoes unfinished ones from their start. An ``OUT`` written with another checkpoint, clip spec,
input list or encode settings (``t_chunk`` included) is refused unless ``--overwrite``; when
the folder under ``--videos`` changed (files added or removed since ``OUT`` was started), the
error names them (up to three of each, then a count). A file deleted or corrupted while the run
is going is skipped and counted like one that was bad from the start (``missing: ...`` /
``unreadable: ...`` in the manifest's ``skipped``). The
per-device batch size may change float rounding: keep ``--batch_size`` per device when resuming
for bit-equal results.
"""

from wfvae_jax.encode_dataset.run import encode_dataset, run_mesh
from wfvae_jax.encode_dataset.spec import (
    COMPUTE_DTYPES,
    DEFAULT_VIDEOS_PER_SHARD,
    DEFAULT_WORKER_COUNT,
    EncodeOptions,
    check_clips,
    clips_identity,
    params_hash,
    parse_resolution,
    scale_shift,
    spec_dict,
)
from wfvae_jax.io.clip_spec import ClipSpec

__all__ = [
    "COMPUTE_DTYPES",
    "DEFAULT_VIDEOS_PER_SHARD",
    "DEFAULT_WORKER_COUNT",
    "ClipSpec",
    "EncodeOptions",
    "check_clips",
    "clips_identity",
    "encode_dataset",
    "params_hash",
    "parse_resolution",
    "run_mesh",
    "scale_shift",
    "spec_dict",
]

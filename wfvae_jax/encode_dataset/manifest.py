"""The output directory's state: refusing another encoding, the run's manifest (started, then
completed with every process's shard markers)."""

from __future__ import annotations

import collections
import logging
import os
from typing import Any

import jax

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.data import latents as fmt
from wfvae_jax.encode_dataset.spec import (
    ClipSpec,
    EncodeOptions,
    scale_shift,
    sha256_json,
    spec_dict,
)
from wfvae_jax.inference.multihost import allgather_json, sync_processes

logger = logging.getLogger(__name__)


def new_manifest(
    params: Any,
    config: WFVAEConfig,
    inputs: Any,
    spec: ClipSpec,
    options: EncodeOptions,
    *,
    checkpoint: str | None,
    latent_shape: list[int],
    run: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a run that has not finished (``complete`` False, no shards yet)."""
    spec_d = spec_dict(params, config, inputs, spec, options)
    scale, shift = scale_shift(config)
    return {
        "format": fmt.FORMAT,
        "version": fmt.VERSION,
        "spec": spec_d,
        "spec_hash": sha256_json(spec_d),
        "model_config": config.to_dict(),
        "checkpoint": checkpoint,
        "source_info": inputs.info(),
        "scale": scale,
        "shift": shift,
        "latent_shape": latent_shape,
        "num_shards": -(-len(inputs) // options.videos_per_shard),
        "complete": False,
        "run": run,
    }


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _few(names: list[str], k: int = 3) -> str:
    more = len(names) - k
    return ", ".join(names[:k]) + (f" and {more} more" if more > 0 else "")


def _input_changes(manifest: dict, videos: list[str] | None) -> str | None:
    """``"1 added (c.mp4); 2 removed (a.mp4, b.mp4)"`` between the manifest's video list and
    ``videos``, or None when either list is unknown or they are equal."""
    old = (manifest.get("source_info") or {}).get("videos")
    if old is None or videos is None:
        return None
    added, removed = sorted(set(videos) - set(old)), sorted(set(old) - set(videos))
    parts = [f"{len(added)} added ({_few(added)})"] if added else []
    parts += [f"{len(removed)} removed ({_few(removed)})"] if removed else []
    return "; ".join(parts) or None


def check_compatible(out: str, spec: dict, spec_hash: str, videos: list[str] | None = None) -> None:
    """Raises ValueError if ``out`` holds shards or a manifest of another spec; when only the
    input folder changed, the message names the added and removed files (``videos``: the
    relative paths now, for a folder input)."""
    manifest = fmt.read_manifest(out)
    if manifest is not None and manifest.get("spec_hash") != spec_hash:
        old, new = _flat(manifest.get("spec", {})), _flat(spec)
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if manifest.get("format") != fmt.FORMAT or manifest.get("version") != fmt.VERSION:
            diff = ["format/version"]
        changes = _input_changes(manifest, videos)
        if changes is not None and all(k.startswith("source.") for k in diff):
            raise ValueError(
                f"the videos under --videos changed since {out} was encoded: {changes}; pass "
                "--overwrite to encode the folder as it is now (all shards are redone), or "
                "use a new --out"
            )
        raise ValueError(
            f"{out} holds latents of a different encoding (differs in: "
            f"{', '.join(diff[:6]) or 'spec'}); pass --overwrite to replace them, or use a "
            "new --out"
        )
    for index, marker in fmt.list_markers(out).items():
        if marker.get("spec_hash") != spec_hash:
            raise ValueError(
                f"{out} holds shard {index} of a different encoding; pass --overwrite to "
                "replace it, or use a new --out"
            )


def prepare_output(out: str, manifest: dict, overwrite: bool) -> dict[int, dict]:
    """Refuses another encoding (or clears it), writes the incomplete manifest (process 0) and
    returns the finished shards of this process: ``{shard: marker}``."""
    os.makedirs(out, exist_ok=True)
    if not overwrite:
        videos = (manifest.get("source_info") or {}).get("videos")
        check_compatible(out, manifest["spec"], manifest["spec_hash"], videos)
    sync_processes("encode_dataset:checked")
    if overwrite:
        removed = fmt.remove_outputs(out)
        if removed:
            logger.info("--overwrite: removed %d files of an earlier encoding in %s", removed, out)
    sync_processes("encode_dataset:cleared")
    if jax.process_index() == 0:
        fmt.write_manifest(out, manifest)
    n_proc, proc = jax.process_count(), jax.process_index()
    finished = {s: m for s, m in fmt.list_markers(out).items() if s % n_proc == proc}
    sync_processes("encode_dataset:listed")  # nobody writes before everybody has listed
    return finished


def final_manifest(manifest: dict, markers: dict[int, dict]) -> dict:
    """``manifest`` completed with every process's shard markers."""
    found: dict[int, dict] = {}
    for part in allgather_json({str(s): m for s, m in markers.items()}):
        found.update({int(s): m for s, m in part.items()})
    shards = [found[s] for s in sorted(found)]
    skipped = [sk for m in shards for sk in m["skipped"]]
    keep = ("file", "videos", "records", "bytes", "sha256")
    return {
        **manifest,
        "complete": len(shards) == manifest["num_shards"],
        "shards": [{k: m[k] for k in keep} for m in shards],
        "num_records": sum(m["records"] for m in shards),
        "skipped": skipped,
        "skipped_counts": dict(collections.Counter(s["kind"] for s in skipped)),
    }

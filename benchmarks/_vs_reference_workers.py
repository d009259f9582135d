"""The worker processes of ``vs_reference.py``: one configuration on one side, in a fresh process.

Run as ``python _vs_reference_workers.py KIND SPEC_JSON`` by ``vs_reference.run_worker``, with
the reference's side in the torch Python (``--torch_python``) and ours in this one; the result
is one tagged JSON line on stdout. Only the standard library (and ``_common``, which imports
nothing else) is imported at the top, so the torch Python needs neither jax nor wfvae_jax (and
ours no torch).

- ``ref_prepare``: a seeded random reference ``WFVAEModel`` of a config, ``save_pretrained``.
- ``ref_run`` / ``ours_run``: load the weights, time the first call and the warm calls, record
  the peak RSS (``ru_maxrss``) and the RSS with only weights and input loaded, save the output.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import _common as C  # the standard library only, like this module

RESULT_TAG = "@@VS_REFERENCE@@ "


def _timed_calls(fn: Any, warm: int) -> tuple[float, list[float], Any]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    warms = []
    for _ in range(warm):
        out = None  # the previous output does not add to the next call's peak
        t0 = time.perf_counter()
        out = fn()
        warms.append(time.perf_counter() - t0)
    return first, warms, out


def ref_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Reference side: a seeded random ``WFVAEModel`` of the given config, ``save_pretrained``."""
    sys.path.insert(0, spec["reference"])
    import torch
    from causalvideovae.model.vae.modeling_wfvae import WFVAEModel

    torch.manual_seed(spec["seed"])
    kwargs = {k: v for k, v in spec["config"].items() if not k.startswith("_")}
    model = WFVAEModel(**kwargs).eval()
    model.save_pretrained(spec["out"])
    return {"parameters": sum(p.numel() for p in model.parameters())}


def ref_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Reference side: load the saved model, time encode/decode, save the output."""
    sys.path.insert(0, spec["reference"])
    import numpy as np
    import torch
    from causalvideovae.model.vae.modeling_wfvae import WFVAEModel

    torch.set_num_threads(spec["threads"])
    model = WFVAEModel.from_pretrained(spec["weights"]).eval()
    if spec["mode"] == "chunked":
        model.enable_tiling()
    x = torch.from_numpy(np.load(spec["input"])).permute(0, 4, 1, 2, 3).contiguous()
    base = C.peak_rss_mib()

    def call() -> Any:
        with torch.inference_mode():
            if spec["op"] == "encode":
                return model.encode(x).latent_dist.mean
            return model.decode(x).sample

    first, warms, y = _timed_calls(call, spec["warm"])
    peak = C.peak_rss_mib()
    np.save(spec["output"], y.permute(0, 2, 3, 4, 1).contiguous().numpy())
    chunks = None
    if spec["mode"] == "chunked":
        chunks = [model.t_chunk_enc, model.t_chunk_dec]
    return {
        "first_s": first,
        "warm_s": warms,
        "peak_rss_mib": peak,
        "loaded_rss_mib": base,
        "chunks": chunks,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def ours_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Our side: load the converted checkpoint, time encode/decode, save the output.

    Only the half the op runs is loaded (``load_pretrained(part="encoder"|"decoder")``): the
    reference memory-maps its safetensors lazily, so its untouched half is never read into
    memory either, and the loaded and peak RSS compare like for like.
    """
    import jax
    import numpy as np

    import wfvae_jax
    from wfvae_jax.io.checkpoint import OP_PART

    params, config = wfvae_jax.load_pretrained(spec["weights"], part=OP_PART[spec["op"]])
    x = jax.block_until_ready(jax.numpy.asarray(np.load(spec["input"])))
    base = C.peak_rss_mib()
    tc = spec["t_chunk"]  # 0: direct; None: auto; else the chunk
    fn = wfvae_jax.encode if spec["op"] == "encode" else wfvae_jax.decode

    def call() -> Any:
        y = fn(params, x, config, t_chunk=tc)
        return jax.block_until_ready(y.mean if spec["op"] == "encode" else y)

    first, warms, y = _timed_calls(call, spec["warm"])
    peak = C.peak_rss_mib()
    np.save(spec["output"], np.asarray(y))
    if tc is None:  # what the auto rule chose, in the op's units
        _, t, h, w, _ = x.shape
        s = config.spatial_downsample if spec["op"] == "decode" else 1
        t = config.video_frames(t) if spec["op"] == "decode" else t
        c = wfvae_jax.auto_t_chunk(config, t, s * h, s * w)
        tc = config.latent_chunk(c) if c and spec["op"] == "decode" else c
    return {
        "first_s": first,
        "warm_s": warms,
        "peak_rss_mib": peak,
        "loaded_rss_mib": base,
        "t_chunk": tc,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def worker_main(kind: str, spec: dict[str, Any]) -> None:
    fn = {"ref_prepare": ref_prepare, "ref_run": ref_run, "ours_run": ours_run}[kind]
    print(RESULT_TAG + json.dumps(fn(spec)), flush=True)


if __name__ == "__main__":
    worker_main(sys.argv[1], json.loads(sys.argv[2]))

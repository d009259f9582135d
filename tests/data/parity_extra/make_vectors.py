"""Writes the reference vectors for ``tests/test_parity_extra.py`` (not run by the tests).

Needs PyTorch, einops, diffusers, numpy, safetensors and pytest (the test module is imported for
its configs and weight recipe), plus a checkout of the reference PyTorch WF-VAE
(PKU-YuanGroup/WF-VAE, tested at d858bee); nothing of the reference is copied here, it is
imported from the given path::

    python tests/data/parity_extra/make_vectors.py /path/to/WF-VAE [--out DIR] [--only NAME ...]

For each config in ``CONFIGS`` it builds the reference ``WFVAEModel``, loads the recipe weights
(``reference_weights``) strictly (the fixed Haar kernels stay as the reference initialises them),
and for each case runs, on CPU in float32, ``encode(x)`` and ``decode(z)`` with ``z`` the posterior
mean. It writes ``<config>.safetensors`` holding, per case, ``<case>/x`` and the outputs named in
``OUTPUTS`` (channels-first), plus ``recipe_checksum``; the config is in the file's metadata.
For the cases in ``TILED`` it also runs the reference's own chunked inference (``enable_tiling``
with the listed chunk sizes instead of its auto-selected ones) and writes ``<case>/z_tiled``
(the posterior mean) and ``<case>/y_tiled`` (chunked decode of ``z``), after checking they are
within 1e-5 of its direct outputs. ``--only`` writes just the named configs (the others' files
stay byte-identical).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", help="root of a PKU-YuanGroup/WF-VAE checkout")
    ap.add_argument("--out", default=str(HERE), help="output directory")
    ap.add_argument("--only", nargs="*", default=None, help="config names (default: all)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, os.path.abspath(args.reference))
    sys.path.insert(0, str(REPO))  # ahead of the reference, so ``tests`` is ours
    import numpy as np
    import torch
    from causalvideovae.model.vae.modeling_wfvae import WFVAEModel
    from safetensors.numpy import save_file

    from tests.test_parity_extra import (
        CASES,
        CONFIGS,
        OUTPUTS,
        TILED,
        make_input,
        model_kwargs,
        recipe_checksum,
        reference_weights,
    )

    torch.manual_seed(0)
    for name in sorted(args.only or CONFIGS):
        model = WFVAEModel(**model_kwargs(name)).eval()
        state = model.state_dict()
        fixed = {k for k in state if "wavelet_transform" in k}
        shapes = {k: tuple(v.shape) for k, v in state.items() if k not in fixed}
        weights = reference_weights(shapes, CONFIGS[name]["seed"])
        full = {k: torch.from_numpy(v) for k, v in weights.items()}
        full.update({k: state[k] for k in fixed})
        model.load_state_dict(full, strict=True)

        tensors = {"recipe_checksum": recipe_checksum(weights)}
        for case, (t, h, w) in CASES[name].items():
            x = make_input(CONFIGS[name]["seed"], t, h, w)
            with torch.no_grad():
                enc = model.encode(torch.from_numpy(x))
                post = enc.latent_dist
                z = post.mean
                dec = model.decode(z)
            out = {
                "moments": torch.cat([post.mean, post.logvar], 1),
                "z": z,
                "enc_l1": enc.extra_output[0],
                "enc_l2": enc.extra_output[1],
                "y": dec.sample,
                "dec_l1": dec.extra_output[0],
                "dec_l2": dec.extra_output[1],
            }
            tensors[f"{case}/x"] = x
            for key in OUTPUTS:
                tensors[f"{case}/{key}"] = np.ascontiguousarray(out[key].numpy(), np.float32)
            if case in TILED.get(name, {}):
                enc_chunk, dec_chunk = TILED[name][case]
                model.enable_tiling(True)
                # Fixed chunks rather than the auto-selected ones (which would skip lookahead).
                model.temporal_size, model.t_chunk_enc, model.t_chunk_dec = t, enc_chunk, dec_chunk
                with torch.no_grad():
                    z_tiled = model.encode(torch.from_numpy(x)).latent_dist.mean
                    y_tiled = model.decode(z).sample
                model.disable_tiling()
                model.temporal_size = None
                for key, tiled, direct in (("z", z_tiled, z), ("y", y_tiled, dec.sample)):
                    err = float((tiled - direct).abs().max())
                    assert err <= 1e-5, f"{name}/{case}: reference tiled {key} off by {err}"
                    tensors[f"{case}/{key}_tiled"] = np.ascontiguousarray(tiled.numpy(), np.float32)
                    print(name, case, f"reference {key}_tiled vs direct: {err:.2e}")
            print(name, case, {k: tuple(v.shape) for k, v in out.items()})
        meta = {"config": json.dumps(model_kwargs(name)), "reference": "PKU-YuanGroup/WF-VAE"}
        path = pathlib.Path(args.out) / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

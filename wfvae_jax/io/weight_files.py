"""What every weight-file reader shares: the error for a refused file and the dtype rule.

Readers: :mod:`.restricted_pickle` (allowlisted pickles), :mod:`.torch_zip` (``torch.save`` zip
archives), :mod:`.safetensors_files`; :mod:`.torch_files` picks one by file name.

Dtypes: numpy has no native bfloat16, so bfloat16 tensors are widened to float32 (exact: every
bfloat16 value is a float32 value) via ``ml_dtypes``; float16 stays float16, other dtypes map 1:1.
"""

from __future__ import annotations

import pickle

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

# The end of every message about a file that cannot be read whole.
INCOMPLETE_HINT = (
    "the file may be truncated or corrupt (an incomplete download?); download it again"
)


class CheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint file that is refused: disallowed pickle contents, malformed tensors, a zip
    bomb, or a truncated/corrupt file. A ``ValueError``, so command-line tools print it as one
    ``error:`` line; a ``pickle.UnpicklingError`` for callers that catch those."""


def widen(array: np.ndarray) -> np.ndarray:
    """``array`` with bfloat16 widened (exactly) to float32; other dtypes untouched (no copy)."""
    if array.dtype == BFLOAT16:
        return array.astype(np.float32)
    return array

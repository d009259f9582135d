"""``wfvae encode-dataset`` for the resume tests, able to stop at a chosen point.

With ``WFVAE_TEST_STOP_AT=record:N`` the process stops right after writing its N-th record (into
a shard's ``.tmp`` file); with ``marker:N`` right before writing its N-th shard marker (after that
shard's data file was renamed into place). There it creates ``WFVAE_TEST_STOP_FILE`` and sleeps,
so that the test can kill it with SIGKILL at exactly that point.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wfvae_jax.commands import encode_dataset  # noqa: E402
from wfvae_jax.commands.errors import run  # noqa: E402
from wfvae_jax.data import latents  # noqa: E402


def _stop_here() -> None:
    with open(os.environ["WFVAE_TEST_STOP_FILE"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)  # the test kills us with SIGKILL
    sys.exit(3)


def _install(stop_at: str) -> None:
    what, n = stop_at.split(":")
    count = {"n": 0}
    if what == "record":
        write = latents.ShardWriter.write

        def counted_write(self, record):
            write(self, record)
            count["n"] += 1
            if count["n"] == int(n):
                _stop_here()

        latents.ShardWriter.write = counted_write
    elif what == "marker":
        write_json = latents.write_json_atomic

        def counted_json(path, obj):
            if os.path.basename(path).startswith("latents-"):
                count["n"] += 1
                if count["n"] == int(n):
                    _stop_here()
            write_json(path, obj)

        latents.write_json_atomic = counted_json
    else:
        raise ValueError(f"bad WFVAE_TEST_STOP_AT {stop_at!r}")


if __name__ == "__main__":
    if os.environ.get("WFVAE_TEST_STOP_AT"):
        _install(os.environ["WFVAE_TEST_STOP_AT"])
    run(encode_dataset.main)

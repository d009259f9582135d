"""Step-time stall at a periodic checkpoint: orbax synchronous vs asynchronous saving (issue 25).

The training state of ``--model`` (params, EMA, both AdamW states, discriminator: the
``TrainState`` of ``configs/default.py`` with that model, from ``abstract_state``) is filled with
random values and saved by the train loop's own :class:`RunCheckpoints` every ``--every`` steps.
The "step" is a stand-in that reads and rewrites the whole state on the devices (``x * (1 -
1e-7)``, as an optimizer update does) plus a ``--matmul``-sized matmul, so that the time a save
adds is not hidden in a model's compute; the loop syncs the host each step, as the train loop does
before a save (it checks the metrics). Reported per mode: the median step time without a save,
the time of a step that saves (its ``save`` call included), the stall (their difference) and the
time ``save`` itself blocks.

    python benchmarks/checkpoint_stall.py --model WF-VAE-S --steps 30 --every 10

Prints a table; writes JSON to ``--out`` (default benchmarks/results/checkpoint_stall.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _state(model: str):
    import jax
    import numpy as np

    from configs import default
    from wfvae_jax.train import loop
    from wfvae_jax.train.step import abstract_state

    config = default.get_config()
    config.model.name = model
    abstract = abstract_state(loop.step_config(config))
    rng = np.random.default_rng(0)

    def fill(s):
        if np.issubdtype(s.dtype, np.floating):
            return jax.device_put(rng.standard_normal(s.shape).astype(s.dtype))
        return jax.device_put(np.zeros(s.shape, s.dtype))

    return jax.tree.map(fill, abstract)


def _iterator():
    import grain

    loader = grain.DataLoader(
        data_source=list(range(1000)),
        sampler=grain.samplers.IndexSampler(
            1000, shard_options=grain.sharding.NoSharding(), shuffle=False, num_epochs=None
        ),
        operations=[],
    )
    return iter(loader)


def measure(state, *, async_save: bool, steps: int, every: int, matmul: int) -> dict:
    import jax
    import jax.numpy as jnp

    from wfvae_jax.train.checkpointing import RunCheckpoints

    @jax.jit
    def step(state, a):
        state = jax.tree.map(
            lambda x: x * (1 - 1e-7) if jnp.issubdtype(x.dtype, jnp.floating) else x + 1, state
        )
        return state, jnp.tanh(a @ a) * 0.5

    a = jnp.ones((matmul, matmul), jnp.float32) / matmul
    it = _iterator()
    times, saving, save_call = [], [], []
    with tempfile.TemporaryDirectory(prefix="ckpt_stall_") as workdir:
        ckpt = RunCheckpoints(workdir, max_to_keep=2, async_save=async_save)
        state, a = step(state, a)  # compile
        jax.block_until_ready(a)
        for i in range(1, steps + 1):
            t0 = time.perf_counter()
            state, a = step(state, a)
            next(it)
            jax.block_until_ready(a)  # the loop's host sync (metrics) before a save
            if i % every == 0:
                t1 = time.perf_counter()
                ckpt.save(state, it, {"step": i})
                save_call.append(time.perf_counter() - t1)
                saving.append(time.perf_counter() - t0)
            else:
                times.append(time.perf_counter() - t0)
        t_close = time.perf_counter()
        ckpt.close()
        close_s = time.perf_counter() - t_close
    base = statistics.median(times)
    return {
        "async_save": async_save,
        "step_s": base,
        "save_step_s": statistics.median(saving),
        "stall_s": statistics.median(saving) - base,
        "save_call_s": statistics.median(save_call),
        "save_call_max_s": max(save_call),
        "final_wait_s": close_s,
        "saves": len(saving),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="WF-VAE-S", help="a wfvae_jax.get_config name")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--every", type=int, default=10, help="checkpoint every this many steps")
    ap.add_argument("--matmul", type=int, default=1024, help="stand-in compute per step")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                  "checkpoint_stall.json"))  # fmt: skip
    args = ap.parse_args()
    import jax

    state = _state(args.model)
    mib = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / 2**20
    rows = [
        measure(state, async_save=mode, steps=args.steps, every=args.every, matmul=args.matmul)
        for mode in (False, True)
    ]
    print(f"model {args.model}: train state {mib:.0f} MiB; {jax.devices()[0].platform}")
    print("| save | step s | step with save s | stall s | save() blocks s | final wait s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {'async' if r['async_save'] else 'sync'} | {r['step_s']:.3f} | "
            f"{r['save_step_s']:.3f} | {r['stall_s']:.3f} | {r['save_call_s']:.3f} | "
            f"{r['final_wait_s']:.3f} |"
        )
    result = {
        "model": args.model,
        "state_mib": mib,
        "platform": jax.devices()[0].platform,
        "steps": args.steps,
        "every": args.every,
        "matmul": args.matmul,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

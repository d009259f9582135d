"""Signal-to-exit time of ``train.py`` on SIGTERM (issue 25): the time from the signal to the
process's exit, which includes finishing the running step and writing its checkpoint.

Runs ``python train.py --config CONFIG --workdir W --config.num_steps=400
--config.checkpoint_every=1000`` (plus ``--set`` overrides), sends SIGTERM once the log reports
step ``--at`` (the log line comes every ``log_every`` steps), and records the exit status, the
seconds to exit, the line printed and the checkpoints on disk; then reruns the same command for
one more step and records the step it resumed from.

    python benchmarks/preemption_exit.py --config configs/cpu_small.py --at 20

Prints a table; writes JSON to ``--out`` (default benchmarks/results/preemption_exit.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_until(cmd: list[str], at: int, timeout: float) -> dict:
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reached = threading.Event()
    pattern = re.compile(r"step (\d+)/")

    def read() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            m = pattern.search(line)
            if m and int(m.group(1)) >= at:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not reached.wait(timeout):
        proc.kill()
        tail = "\n".join(lines[-20:])
        raise RuntimeError(f"the run never reached step {at}:\n{tail}")
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=120)
    seconds = time.perf_counter() - t0
    reader.join(10)
    last = [x for x in lines if x.startswith("SIGTERM")]
    return {"status": status, "signal_to_exit_s": seconds, "line": last[-1] if last else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cpu_small.py")
    ap.add_argument("--at", type=int, default=20, help="send SIGTERM once the log shows this step")
    ap.add_argument("--set", action="append", default=[],
                    help="an extra override, e.g. --set=--config.eval.every_steps=0")  # fmt: skip
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                  "preemption_exit.json"))  # fmt: skip
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="preemption_exit_")
    base = [sys.executable, "train.py", "--config", args.config, "--workdir", workdir,
            "--config.checkpoint_every=1000", *args.set]  # fmt: skip
    result = _run_until([*base, "--config.num_steps=400"], args.at, args.timeout)
    ckpts = os.path.join(workdir, "checkpoints")
    result["checkpoints"] = sorted(os.listdir(ckpts)) if os.path.isdir(ckpts) else []
    saved = [int(s) for s in result["checkpoints"] if s.isdigit()]
    # The rerun: one step past the saved one, to see where it resumes.
    if saved:
        rerun = subprocess.run([*base, f"--config.num_steps={saved[-1] + 1}"], cwd=REPO,
                               capture_output=True, text=True, timeout=args.timeout)  # fmt: skip
        m = re.search(r"resumed from \S+ at step (\d+)", rerun.stderr)
        result["rerun_status"] = rerun.returncode
        result["resumed_at"] = int(m.group(1)) if m else None
    result.update(config=args.config, at=args.at, overrides=args.set, workdir=workdir,
                  date=time.strftime("%Y-%m-%d", time.gmtime()))  # fmt: skip
    print(f"{'config':28s} {'status':>6s} {'exit s':>7s} {'saved':>6s} {'resumed':>7s}")
    print(
        f"{args.config:28s} {result['status']:6d} {result['signal_to_exit_s']:7.2f} "
        f"{(saved or ['-'])[-1]!s:>6s} {result.get('resumed_at')!s:>7s}"
    )
    print(result["line"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

"""Run every benchmark: ``python -m bench [--quick]``.

Each benchmark runs in its own process (each owns a reactor) and prints its own table, with its
baseline measured in the same run.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = {
    "bench.bench_rpc": {"quick": ["--seconds", "1"], "full": ["--seconds", "3"]},
    "bench.bench_hooks": {"quick": ["--seconds", "0.5"], "full": []},
    "bench.bench_mom": {
        "quick": ["--guests", "10,100", "--cycles", "3", "--forms", "5000"],
        "full": [],
    },
    "bench.bench_vm": {
        "quick": ["--cycles", "50", "--vms", "300", "--calls", "5", "--guest-runs", "1"],
        "full": [],
    },
    "bench.bench_engine": {"quick": ["--quick"], "full": []},
    "bench.bench_migration": {"quick": ["--quick"], "full": []},
    "bench.bench_ha": {"quick": ["--quick"], "full": []},
    "bench.bench_balance": {"quick": ["--noisy-rounds", "30"], "full": []},
}


def main(argv: list[str]) -> int:
    mode = "quick" if "--quick" in argv else "full"
    status = 0
    for module, args in BENCHES.items():
        print(f"\n== {module} ({mode})", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", module, *args[mode]], stderr=subprocess.DEVNULL
        )
        status = status or done.returncode
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

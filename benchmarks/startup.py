"""How long a new user waits before neuroloc answers: `import neuroloc`, `neuroloc --help` and a study's
`--help`, each in a fresh process (best of N, wall clock), with what each imported."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "matplotlib", "pandas", "sklearn", "scipy")
CASES = {
    "import neuroloc": "import neuroloc",
    "neuroloc --help": "from neuroloc.cli import app; app(['--help'], standalone_mode=False)",
    "neuroloc localize --help": "from neuroloc.cli import app; app(['localize', '--help'], standalone_mode=False)",
}


def measure(code: str, repeats: int) -> tuple[float, list[str]]:
    probe = code + f"\nimport sys; print('HEAVY', *[m for m in {HEAVY!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    best, heavy = float("inf"), []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
        best = min(best, time.perf_counter() - started)
        heavy = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("HEAVY")][-1]
    return best, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, code in CASES.items():
        seconds, heavy = measure(code, args.repeats)
        print(f"{name:28s} {seconds:6.2f} s   heavy modules imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()

"""How long `tower --help` takes to start, this checkout against an earlier commit, in one run.

Run with ``make bench-cli`` or ``python -m bench.cli_start [--before REF] [--runs N]``. Each
round runs ``python -m tower --help`` once per checkout, alternating, so both see the same
machine; the earlier commit runs from a git worktree. Reported: the median, the fastest and the
slowest wall time per checkout, and which numeric libraries each imported (``-X importtime``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_section

REPO = Path(__file__).resolve().parents[1]
# The last commit whose `tower --help` imported numpy and scipy (through the learning module).
BEFORE_REF = "5c928af"
HEAVY = ("numpy", "scipy", "torch")


def start_seconds(tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tower", "--help"], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                   capture_output=True, check=True)
    return time.perf_counter() - started


def heavy_imports(tree: Path) -> list[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tower", "--help"], cwd=tree,
                            env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True)
    names = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return sorted(name for name in names if name in HEAVY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE_REF, help=f"the earlier commit (default {BEFORE_REF})")
    parser.add_argument("--runs", type=int, default=20, help="runs per checkout (default 20)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    tree = Path(tempfile.mkdtemp(prefix="tower-bench-cli-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.before], check=True,
                   capture_output=True)
    try:
        trees = {f"`{args.before}`": tree, "this checkout": REPO}
        times: dict[str, list[float]] = {name: [] for name in trees}
        for name, where in trees.items():
            start_seconds(where)  # warm the file cache
        for _ in range(args.runs):
            for name, where in trees.items():
                times[name].append(start_seconds(where))
        rows = [
            f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | "
            f"{', '.join(heavy_imports(trees[name])) or 'none'} |"
            for name, t in times.items()
        ]
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
    section = "\n".join([
        "## `tower --help` start time (`make bench-cli`)",
        "",
        f"`python -m bench.cli_start` on {os.cpu_count()} cores ({platform.machine()}), Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}: `python -m tower --help`, {args.runs} runs per "
        "checkout, alternating, wall time of the whole process.",
        "",
        "| checkout | median (s) | fastest (s) | slowest (s) | numeric libraries imported |",
        "|---|---|---|---|---|",
        *rows,
    ])
    if not args.no_write:
        write_section("cli-start", section)
    print(section)


if __name__ == "__main__":
    main()

"""Where a `meterfix remediate` run's time goes: start-up, a cost per batch, a cost per row.

    .venv/bin/python bench/batches.py [--rows 1000000] [--mix varied] [--format csv|jsonl]
        [--rounds 3] [--sizes 0.125,0.5,1,2]

Runs `meterfix remediate` on the bench's failed-records file (bench/remediate.py's rows) with
the engine's batches made smaller and larger than they are (`remediation.batching.BLOCK_BYTES`
for a CSV, `JSONL_BATCH_ROWS` for JSON Lines, times each of `--sizes`), and on a file of one
row (start-up: imports, rules and meters read, outputs opened and closed). Each run reports,
from inside the process: wall time, the CPU time of the thread that decides the rows (it is
the CSV run's critical path: the other threads parse and write beside it; a JSON Lines run
also waits for its writer), the batches decided and peak RSS. A least-squares line through
(batches, main-thread CPU), and one through (batches, wall time), split the run into a fixed
cost per batch (the Python between Arrow's kernels, which does not grow with the rows) and the
rest; the rest less start-up is what the rows cost. Alternating rounds, medians.

What the split says: a batch size's speed is bought with memory (each MB of a batch costs
about 20 MB of peak RSS), so the per-batch cost is the lever a larger batch pulls; the
per-row cost and start-up are what no batch size removes (their sum is this design's floor
for the run, printed next to the CSV copy's 0.6x target).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import remediate as remediate_bench  # bench/remediate.py: the same rows and copies

# Run in the child: the batch size set, the batches counted, the figures printed at exit.
CHILD = """
import atexit, json, os, resource, sys, time
started = time.perf_counter()
import remediation.batching as batching
import remediation.core.decide as decide
scale = float(os.environ["MFX_BENCH_SCALE"])
batching.BLOCK_BYTES = max(4096, int(batching.BLOCK_BYTES * scale))
batching.JSONL_BATCH_ROWS = max(16, int(batching.JSONL_BATCH_ROWS * scale))
batches = [0]
plain = decide.BatchDecider.decide
def counted(self, batch):
    batches[0] += 1
    return plain(self, batch)
decide.BatchDecider.decide = counted
def figures():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("MFX_BENCH " + json.dumps({
        "wall": time.perf_counter() - started,
        "main": time.thread_time(),
        "batches": batches[0],
        "rss": usage.ru_maxrss / 1024,
    }), file=sys.stderr)
atexit.register(figures)
from service.cli import main
sys.argv = ["meterfix", *sys.argv[1:]]
main()
"""


def run(work: Path, source: Path, scale: float) -> dict[str, Any]:
    out = work / "out"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    command = [sys.executable, "-c", CHILD, "remediate", "--meters", str(work / "meters.json")]
    command += ["--rules", str(work / "rules.toml"), "--now", str(remediate_bench.NOW)]
    command += ["--json", str(source), "--out", str(out)]
    env = {**os.environ, "MFX_BENCH_SCALE": str(scale)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {done.stderr[-2000:]}")
    line = next(x for x in done.stderr.splitlines() if x.startswith("MFX_BENCH "))
    figures: dict[str, Any] = json.loads(line.removeprefix("MFX_BENCH "))
    return figures


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through `points`."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mix", choices=sorted(remediate_bench.MIXES), default="varied")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    parser.add_argument("--sizes", default="0.125,0.5,1,2", help="batch sizes, x the engine's")
    args = parser.parse_args()
    scales = [float(s) for s in args.sizes.split(",")]
    if len(scales) < 2:
        raise SystemExit("--sizes needs two sizes at least")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        remediate_bench.prepare(work, args.rows, args.mix)
        source = work / f"failed.{args.format}"
        one = work / f"one.{args.format}"
        remediate_bench.generate(work / "one.csv", 1, args.mix)
        runs: dict[float, list[dict[str, Any]]] = {scale: [] for scale in [0.0, *scales]}
        copy: list[float] = []
        copy_script = work / ("plain_copy.py" if args.format == "csv" else "json_copy.py")
        for _ in range(args.rounds):
            runs[0.0].append(run(work, one, 1.0))
            for scale in scales:
                runs[scale].append(run(work, source, scale))
            copied = remediate_bench.timed(
                [sys.executable, str(copy_script), str(source), str(work / "copy")]
            )
            copy.append(copied.seconds)
    median = {
        scale: {key: statistics.median(r[key] for r in got) for key in got[0]}
        for scale, got in runs.items()
    }
    start = median.pop(0.0)
    copy_seconds = statistics.median(copy)
    print(
        f"rows: {args.rows:,} ({args.mix} mix, {args.format}); {args.rounds} alternating rounds, "
        f"medians; load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'batch size':>12s} {'batches':>8s} {'wall':>7s} {'main CPU':>9s} {'peak RSS':>9s}")
    for scale, got in median.items():
        print(
            f"{scale:11.3g}x {got['batches']:8.0f} {got['wall']:6.2f}s {got['main']:8.2f}s "
            f"{got['rss']:7.0f} MB"
        )
    print(
        f"start-up (a file of one row): {start['main']:.2f} s main CPU, {start['wall']:.2f} s wall"
    )
    usual = median.get(1.0)
    for clock, label in (("main", "main-thread CPU"), ("wall", "wall time")):
        intercept, per_batch = fit([(got["batches"], got[clock]) for got in median.values()])
        rows_cost = intercept - start[clock]
        share = (
            "" if usual is None else f"; {per_batch * usual['batches'] / usual[clock]:.1%} at 1x"
        )
        print(
            f"{label:16s} per batch {per_batch * 1000:6.2f} ms{share}; per row "
            f"{rows_cost / args.rows * 1e6:5.2f} us ({rows_cost:.2f} s); start-up + rows (no "
            f"batch cost at all) {intercept:.2f} s"
        )
    intercept, _ = fit([(got["batches"], got["wall"]) for got in median.values()])
    kind = "csv" if args.format == "csv" else "json"
    goal = 0.6 if args.format == "csv" else 1.0
    print(
        f"{kind} copy: {copy_seconds:.2f} s; start-up + rows, wall: {intercept:.2f} s = "
        f"{intercept / copy_seconds:.2f}x the copy (target <= {goal}); at 1x: "
        + ("-" if usual is None else f"{usual['wall'] / copy_seconds:.2f}x")
    )


if __name__ == "__main__":
    main()

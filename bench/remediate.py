"""Remediation benchmark: plain csv copy vs a pandas script vs `meterfix remediate`.

Generates a 1,000,000-row failed-records CSV (realistic error mix) in a temp dir and times
each contender in its own process, printing seconds, peak RSS and ratios; then runs
`meterfix remediate` on a 2x file to show memory stays flat.
Usage: python bench/remediate.py [--rows N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

NOW = 1_764_000_000
HEADER = [
    "identifier",
    "timestamp",
    "event_name",
    "payload_stripe_customer_id",
    "payload_value",
    "error_code",
    "error_message",
]
METERS = {
    "data": [
        {"id": "mtr_1", "event_name": "api_requests", "status": "active"},
        {
            "id": "mtr_2",
            "event_name": "tokens",
            "status": "active",
            "value_settings": {"event_payload_key": "tokens"},
        },
    ]
}
MIX = (  # (weight, code, row builder)
    (40, "timestamp_in_future", lambda i: [NOW * 1000 + i % 1000, "api_requests", "cus_1", "5"]),
    (20, "meter_event_invalid_value", lambda i: [NOW - 60, "api_requests", "cus_2", "1,234"]),
    (15, "no_meter", lambda i: [NOW - 60, "API-Requests", "cus_3", "7"]),
    (10, "meter_event_customer_not_found", lambda i: [NOW - 60, "api_requests", "acme-42", "1"]),
    (10, "meter_event_invalid_value", lambda i: [NOW - 60, "api_requests", "cus_4", "NaN"]),
    (5, "timestamp_too_far_in_past", lambda i: [NOW - 90 * 86400, "api_requests", "cus_5", "3"]),
)


def generate(path: Path, rows: int) -> None:
    rng = random.Random(7)
    weights = [w for w, _, _ in MIX]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            _, code, build = rng.choices(MIX, weights)[0]
            writer.writerow([f"evt-{i:08d}", *build(i), code, ""])


COPY = textwrap.dedent("""
    import csv, sys
    with open(sys.argv[1], newline="") as src, open(sys.argv[2], "w", newline="") as dst:
        csv.writer(dst).writerows(csv.reader(src))
""")

PANDAS = textwrap.dedent("""
    import sys
    import numpy as np
    import pandas as pd
    now = int(sys.argv[3])
    df = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
    ts = pd.to_numeric(df["timestamp"], errors="coerce")
    ms = ts > now + 300
    df.loc[ms, "timestamp"] = (ts[ms] // 1000).astype("int64").astype(str)
    value = df["payload_value"].str.strip().str.replace(",", "", regex=False)
    number = pd.to_numeric(value, errors="coerce")
    df["payload_value"] = value
    norm = df["event_name"].str.lower().str.replace("-", "_", regex=False)
    df["event_name"] = np.where(norm == "api_requests", "api_requests", df["event_name"])
    df["payload_stripe_customer_id"] = df["payload_stripe_customer_id"].replace(
        {"acme-42": "cus_Q1"})
    ts = pd.to_numeric(df["timestamp"], errors="coerce")
    bad = number.isna() | ~np.isfinite(number) | (ts < now - 35 * 86400)
    df["identifier"] = df["identifier"] + "-r1"
    cols = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]
    df.loc[~bad, cols].to_csv(sys.argv[2] + ".corrected.csv", index=False)
    q = df.loc[bad, cols].copy()
    q["mfx_code"] = df.loc[bad, "error_code"]
    q.to_csv(sys.argv[2] + ".quarantine.csv", index=False)
""")


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MB) of a child process, measured with wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    py = sys.executable
    meterfix = str(Path(py).with_name("meterfix"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src, big = work / "failed.csv", work / "failed2x.csv"
        generate(src, args.rows)
        (work / "meters.json").write_text(json.dumps(METERS))
        (work / "rules.toml").write_text('[customers]\n"acme-42" = "cus_Q1"\n')
        (work / "plain_copy.py").write_text(COPY)
        (work / "pandas_fix.py").write_text(PANDAS)
        mfx = [
            meterfix,
            "remediate",
            "--meters",
            str(work / "meters.json"),
            "--rules",
            str(work / "rules.toml"),
            "--now",
            str(NOW),
            "--json",
        ]
        results = {
            "csv copy": timed([py, str(work / "plain_copy.py"), str(src), str(work / "copy.csv")]),
            "pandas": timed(
                [py, str(work / "pandas_fix.py"), str(src), str(work / "pd"), str(NOW)]
            ),
            "meterfix": timed([*mfx, str(src), "--out", str(work / "out1")]),
        }
        generate(big, 2 * args.rows)
        results["meterfix 2x"] = timed([*mfx, str(big), "--out", str(work / "out2")])
    base = results["csv copy"][0]
    print(f"rows: {args.rows:,}  (2x file: {2 * args.rows:,})")
    for name, (seconds, rss) in results.items():
        print(f"{name:12s} {seconds:7.2f} s  {seconds / base:5.2f}x copy  peak RSS {rss:6.1f} MB")
    ratio = results["meterfix"][0] / base
    print(
        f"meterfix / copy = {ratio:.2f} (target <= 1.5); "
        f"meterfix / pandas = {results['meterfix'][0] / results['pandas'][0]:.2f} (< 1); "
        f"RSS 1x {results['meterfix'][1]:.0f} MB vs 2x {results['meterfix 2x'][1]:.0f} MB"
    )
    _ = resource  # wait4 gives per-child usage; resource kept for RUSAGE docs


if __name__ == "__main__":
    main()

"""Remediation benchmark: plain csv copy vs a pandas script vs `meterfix remediate`.

Generates a 1,000,000-row failed-records CSV in a temp dir (seeded, deterministic) that looks
like real usage: every row has its own uuid-like identifier, value and timestamp; customers
come from a pool of 50,000; about 9 rows in 10 carry an error code (ms timestamps and small
future skews, "1,234"-style values, event names in another case or spelling, external
customer ids mapped by the rules' customer map, text values, old usage, unknown codes), and a
few cannot be corrected. Times each contender in its own process over alternating rounds,
printing median seconds, peak RSS and ratios; then runs `meterfix remediate` on a 2x file to
show memory stays flat, and `meterfix --help` for the CLI's start-up cost.
Usage: python bench/remediate.py [--rows N] [--rounds N] [--only "csv copy,meterfix"]
Peak RSS is per process (wait4); with two worker processes the machine holds more.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

NOW = 1_764_000_000
DAY = 86_400
HEADER = [
    "identifier",
    "timestamp",
    "event_name",
    "payload_stripe_customer_id",
    "payload_value",
    "error_code",
    "error_message",
]
EVENT_NAMES = ("api_requests", "storage_gb", "compute_minutes")
METERS = {"data": [{"id": f"mtr_{i}", "event_name": n} for i, n in enumerate(EVENT_NAMES)]}
MISSPELT = ("API-Requests", "Api_Requests", "STORAGE_GB", "storage-gb", "Compute Minutes")
EXTERNAL_IDS = 5_000  # customers known by an external id, mapped in the rules' customer map
STRIPE_CUSTOMERS = 50_000
MESSAGES = {
    "timestamp_in_future": "Timestamp is in the future.",
    "meter_event_invalid_value": "Value must be a number.",
    "no_meter": "No meter was found matching event_name.",
    "meter_event_customer_not_found": "No customer was found.",
    "timestamp_too_far_in_past": "Timestamp is too far in the past.",
    "odd_code": "Something Stripe added later.",
    "": "",
}
# (weight, error code, kind of damage); about 1 row in 10 arrives without an error code
MIX = (
    (28, "timestamp_in_future", "ms"),
    (4, "timestamp_in_future", "skew"),
    (16, "meter_event_invalid_value", "thousands"),
    (3, "meter_event_invalid_value", "text"),
    (12, "no_meter", "case"),
    (11, "meter_event_customer_not_found", "external"),
    (1, "meter_event_customer_not_found", "unknown"),
    (5, "timestamp_too_far_in_past", "old"),
    (9, "", "valid"),
    (1, "odd_code", "valid"),
)


class RowMaker:
    """Varied rows: every row its own identifier, value, timestamp; many customers."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def identifier(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def value(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            return str(rng.randint(1, 5000))
        return f"{rng.randint(0, 999)}.{rng.randint(1, 99)}"

    def customer(self) -> str:
        return f"cus_{self.rng.randrange(STRIPE_CUSTOMERS):014d}"

    def row(self, code: str, damage: str) -> list[str]:
        rng = self.rng
        ts, name, customer, value = NOW - rng.randrange(30 * DAY), "", self.customer(), self.value()
        name = rng.choice(EVENT_NAMES)
        if damage == "ms":
            ts = ts * 1000 + rng.randrange(1000)
        elif damage == "skew":
            ts = NOW + 301 + rng.randrange(3000)
        elif damage == "thousands":
            value = f"{rng.randint(1, 999)},{rng.randrange(1000):03d}"
            value += f".{rng.randint(1, 9)}" if rng.random() < 0.2 else ""
        elif damage == "text":
            value = rng.choice(("NaN", "n/a", "", "inf", "twelve"))
        elif damage == "case":
            name = rng.choice(MISSPELT)
        elif damage == "external":
            customer = f"ext-{rng.randrange(EXTERNAL_IDS):06d}"
        elif damage == "unknown":
            customer = f"legacy-{rng.randrange(10**6)}"
        elif damage == "old":
            ts = NOW - (40 + rng.randrange(300)) * DAY
        return [self.identifier(), str(ts), name, customer, value, code, MESSAGES[code]]


def generate(path: Path, rows: int) -> None:
    maker, weights = RowMaker(7), [w for w, _, _ in MIX]
    kinds = maker.rng.choices([(c, d) for _, c, d in MIX], weights, k=rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(maker.row(code, damage) for code, damage in kinds)


def rules_toml() -> str:
    lines = ["[customers]"]
    lines += [f'"ext-{i:06d}" = "cus_x{i:013d}"' for i in range(EXTERNAL_IDS)]
    return "\n".join(lines) + "\n"


COPY = textwrap.dedent("""
    import csv, sys
    with open(sys.argv[1], newline="") as src, open(sys.argv[2], "w", newline="") as dst:
        csv.writer(dst).writerows(csv.reader(src))
""")

PANDAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pandas as pd
    now, skew, old = int(sys.argv[3]), 3600, 35 * 86400
    customers = json.load(open(sys.argv[4]))
    names = {"apirequests": "api_requests", "storagegb": "storage_gb",
             "computeminutes": "compute_minutes"}
    df = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
    ts = pd.to_numeric(df["timestamp"], errors="coerce")
    for div in (10**9, 10**6, 10**3):
        s = ts // div
        hit = (ts > now + 300) & (s >= now - old) & (s <= now + skew)
        ts = ts.where(~hit, s)
    ts = ts.where(~((ts > now + 300) & (ts <= now + skew)), now)
    df["timestamp"] = ts.astype("Int64").astype(str)
    value = df["payload_value"].str.strip().str.replace(",", "", regex=False)
    number = pd.to_numeric(value, errors="coerce")
    df["payload_value"] = value
    norm = df["event_name"].str.lower().str.replace(r"[-_ ]", "", regex=True)
    df["event_name"] = norm.map(names).fillna(df["event_name"])
    cust = df["payload_stripe_customer_id"]
    df["payload_stripe_customer_id"] = cust.map(customers).fillna(cust)
    bad = (number.isna() | ~np.isfinite(number) | ts.isna() | (ts < now - old)
           | (ts > now + 300) | ~df["payload_stripe_customer_id"].str.startswith("cus_")
           | ~df["event_name"].isin(names.values()) | (df["error_code"] == "odd_code"))
    df["identifier"] = df["identifier"] + "-mfx1"
    cols = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]
    df.loc[~bad, cols].to_csv(sys.argv[2] + ".corrected.csv", index=False)
    q = df.loc[bad, cols].copy()
    q["mfx_code"] = df.loc[bad, "error_code"]
    q.to_csv(sys.argv[2] + ".quarantine.csv", index=False)
""")


class Figures(NamedTuple):
    seconds: float  # wall clock
    rss: float  # peak RSS of the largest single process, MB
    cpu: float  # user + system seconds of the process and its children


def timed(cmd: list[str]) -> Figures:
    """Figures of a child process, measured with wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return Figures(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def prepare(work: Path, rows: int) -> None:
    generate(work / "failed.csv", rows)
    (work / "meters.json").write_text(json.dumps(METERS))
    (work / "rules.toml").write_text(rules_toml())
    customers = {f"ext-{i:06d}": f"cus_x{i:013d}" for i in range(EXTERNAL_IDS)}
    (work / "customers.json").write_text(json.dumps(customers))
    (work / "plain_copy.py").write_text(COPY)
    (work / "pandas_fix.py").write_text(PANDAS)


def contenders(work: Path) -> dict[str, list[str]]:
    py, src = sys.executable, str(work / "failed.csv")
    pandas = [
        str(work / "pandas_fix.py"),
        src,
        str(work / "pd"),
        str(NOW),
        str(work / "customers.json"),
    ]
    meterfix = str(Path(py).with_name("meterfix"))
    mfx = [meterfix, "remediate", "--meters", str(work / "meters.json")]
    mfx += ["--rules", str(work / "rules.toml"), "--now", str(NOW), "--json"]
    return {
        "csv copy": [py, str(work / "plain_copy.py"), src, str(work / "copy.csv")],
        "pandas": [py, *pandas],
        "meterfix": [*mfx, src, "--out", str(work / "out1")],
        "meterfix 2x": [*mfx, str(work / "failed2x.csv"), "--out", str(work / "out2")],
        "meterfix --help": [meterfix, "--help"],
    }


def rounds(commands: dict[str, list[str]], wanted: list[str], count: int) -> dict[str, Figures]:
    """Median figures of each contender over `count` alternating rounds (the machine may be
    shared: alternating spreads its noise over every contender alike)."""
    runs: dict[str, list[Figures]] = {name: [] for name in wanted}
    for _ in range(count):
        for name in wanted:
            runs[name].append(timed(commands[name]))
    return {
        name: Figures(
            statistics.median(f.seconds for f in got),
            max(f.rss for f in got),
            statistics.median(f.cpu for f in got),
        )
        for name, got in runs.items()
    }


def report(rows: int, results: dict[str, Figures]) -> None:
    base = results.get("csv copy", Figures(1.0, 0.0, 1.0))
    print(f"rows: {rows:,}  (2x file: {2 * rows:,}); load average {os.getloadavg()[0]:.2f}")
    for name, got in results.items():
        print(
            f"{name:16s} {got.seconds:7.2f} s  {got.seconds / base.seconds:5.2f}x copy  "
            f"cpu {got.cpu:6.2f} s ({got.cpu / base.cpu:4.2f}x)  peak RSS {got.rss:6.1f} MB"
        )
    if not {"csv copy", "pandas", "meterfix", "meterfix 2x"} <= set(results):
        return
    mfx, pandas, big = results["meterfix"], results["pandas"], results["meterfix 2x"]
    print(
        f"meterfix / copy = {mfx.seconds / base.seconds:.2f} (target <= 1.5); "
        f"meterfix / pandas = {mfx.seconds / pandas.seconds:.2f} (< 1); "
        f"RSS 1x {mfx.rss:.0f} MB vs 2x {big.rss:.0f} MB (largest single process)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, args.rows)
        commands = contenders(work)
        wanted = args.only.split(",") if args.only else list(commands)
        if "meterfix 2x" in wanted:
            generate(work / "failed2x.csv", 2 * args.rows)
        results = rounds(commands, wanted, args.rounds)
    report(args.rows, results)


if __name__ == "__main__":
    main()

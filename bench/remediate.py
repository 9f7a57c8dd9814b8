"""Remediation benchmark: `meterfix remediate` next to plain copies and pandas/polars scripts.

Generates a failed-records file in a temp dir (seeded, deterministic), as CSV, as JSON
Lines and as a JSON array (one element a line) with the same rows. Two mixes (`--mix`):
- `varied` (the bench's own): every row its own uuid-like identifier, value and timestamp;
  customers from a pool of 50,000; about 9 rows in 10 carry an error code (ms timestamps and
  small future skews, "1,234"-style values, event names in another case or spelling, external
  customer ids mapped by the rules' customer map, text values, old usage, unknown codes), and
  a few cannot be corrected;
- `basic`: the four basic fixes only: 40 % millisecond timestamps, 30 % values with thousands
  separators, 20 % case-mangled event names, 10 % already valid.
Times each contender in its own process over alternating rounds, printing median seconds,
CPU seconds, peak RSS and the ratios the remediation core is held to (CSV <= 0.6x the csv
copy in one process, JSON Lines <= 1.0x a json.loads/json.dumps copy, peak RSS <= 150 MB and
flat from 1x to 4x, <= 1.5x the polars script); the pandas and polars scripts apply the same
basic fixes.
Usage: python bench/remediate.py [--rows N] [--rounds N] [--mix varied|basic] [--big 4]
       [--only "csv copy,meterfix"] [--optional-keys N] [--payload-columns N] [--own-keys N]
`--optional-keys 7`: the JSON rows (not the CSV) carry optional payload keys, 128 layouts;
`--own-keys 5`: every JSON row (not the CSV) 5 payload keys no other row names (hostile
input: every key a column of its batch; take `--rows 20000 --only "json copy,meterfix jsonl"`);
`--payload-columns 20`: every row 20 more payload columns (27 in all).
Peak RSS and CPU as GNU time reports them (`/usr/bin/time`; wait4 without it): RSS of the
largest process, CPU of the process and its children (meterfix runs in one process: its CPU
time is about its wall time).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
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
# the basic mix: 40 % ms timestamps, 30 % thousands separators, 20 % case, 10 % valid
BASIC_MIX = (
    (40, "timestamp_in_future", "ms"),
    (30, "meter_event_invalid_value", "thousands"),
    (20, "no_meter", "case"),
    (10, "", "valid"),
)
MIXES = {"varied": MIX, "basic": BASIC_MIX}


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


def generate(
    path: Path, rows: int, mix: str = "varied", optional: int = 0, wide: int = 0, own: int = 0
) -> None:
    """The CSV at `path` and the same rows as JSON Lines beside it (`.jsonl`); `optional`:
    the JSON rows' payloads carry each of that many more keys or not (2**optional layouts);
    `wide`: every row carries that many more payload columns (CSV) and keys (JSON); `own`:
    every JSON row's payload that many keys of its own."""
    table = MIXES[mix]
    maker, weights = RowMaker(7), [w for w, _, _ in table]
    dimensions = Dimensions(optional, own)
    more = [f"dim{i}" for i in range(wide)]
    texts = random.Random(13)  # apart from the rows' own
    kinds = maker.rng.choices([(c, d) for _, c, d in table], weights, k=rows)
    with (
        open(path, "w", newline="") as handle,
        open(path.with_suffix(".jsonl"), "w") as lines,
    ):
        writer = csv.writer(handle)
        writer.writerow(HEADER[:5] + [f"payload_{key}" for key in more] + HEADER[5:])
        for code, damage in kinds:
            row = maker.row(code, damage)
            values = [texts.choice(("eu", "us-east-1", "b", "")) for _ in more]
            writer.writerow(row[:5] + values + row[5:])
            record = dimensions.added(json_row(row))
            payload = record["payload"]
            assert isinstance(payload, dict)
            payload.update(zip(more, values, strict=True))
            lines.write(json.dumps(record, separators=(",", ":")) + "\n")


class Dimensions:
    """Optional payload keys (region, tier, ...), each in a row or not, a text or a number;
    and `own` keys each row names alone (`k<row>_<i>`, numbers)."""

    def __init__(self, count: int, own: int = 0) -> None:
        self.keys = [f"dim{i}" for i in range(count)]
        self.rng = random.Random(11)  # apart from the rows' own: the CSV stays the same
        self.own, self.rows = own, 0

    def added(self, record: dict[str, object]) -> dict[str, object]:
        payload = record["payload"]
        assert isinstance(payload, dict)
        for at, key in enumerate(self.keys):
            if self.rng.random() < 0.5:
                payload[key] = at if at % 2 else self.rng.choice(("eu", "us-east-1", "b"))
        payload.update((f"k{self.rows:x}_{at}", at) for at in range(self.own))
        self.rows += 1
        return record


def json_row(row: list[str]) -> dict[str, object]:
    """A CSV row as a JSON Lines record: numbers where the text is a plain number."""
    identifier, ts, name, customer, value, code, message = row
    number: object = value
    if value.isdigit():
        number = int(value)
    elif value.replace(".", "", 1).isdigit():
        number = float(value)
    record: dict[str, object] = {
        "identifier": identifier,
        "timestamp": int(ts),
        "event_name": name,
        "payload": {"stripe_customer_id": customer, "value": number},
    }
    if code:
        record["error"] = {"code": code, "message": message}
    return record


def rules_toml() -> str:
    lines = ["[customers]"]
    lines += [f'"ext-{i:06d}" = "cus_x{i:013d}"' for i in range(EXTERNAL_IDS)]
    return "\n".join(lines) + "\n"


COPY = textwrap.dedent("""
    import csv, sys
    with open(sys.argv[1], newline="") as src, open(sys.argv[2], "w", newline="") as dst:
        csv.writer(dst).writerows(csv.reader(src))
""")

JSON_COPY = textwrap.dedent("""
    import json, sys
    with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
        for line in src:
            dst.write(json.dumps(json.loads(line)) + "\\n")
""")

# The same basic fixes as the pandas script, streaming in batches (polars' lazy engine).
POLARS = textwrap.dedent("""
    import json, sys
    import polars as pl
    now, skew, old = int(sys.argv[3]), 3600, 35 * 86400
    DROPPED = ("error_code", "error_message", "ts", "number", "bad")
    customers = json.load(open(sys.argv[4]))
    names = {"apirequests": "api_requests", "storagegb": "storage_gb",
             "computeminutes": "compute_minutes"}
    df = pl.scan_csv(sys.argv[1], infer_schema=False)
    ts = pl.col("timestamp").cast(pl.Int64, strict=False)
    for div in (10**9, 10**6, 10**3):
        s = ts // div
        ts = pl.when((ts > now + 300) & (s >= now - old) & (s <= now + skew)).then(s).otherwise(ts)
    ts = pl.when((ts > now + 300) & (ts <= now + skew)).then(now).otherwise(ts)
    value = pl.col("payload_value").str.strip_chars().str.replace_all(",", "", literal=True)
    norm = pl.col("event_name").str.to_lowercase().str.replace_all(r"[-_ ]", "")
    cust = pl.col("payload_stripe_customer_id")
    df = df.with_columns(
        ts.alias("ts"),
        value.alias("payload_value"),
        value.cast(pl.Float64, strict=False).alias("number"),
        norm.replace_strict(names, default=pl.col("event_name")).alias("event_name"),
        cust.replace_strict(customers, default=cust).alias("payload_stripe_customer_id"),
        (pl.col("identifier") + "-mfx1").alias("identifier"),
    )
    bad = (pl.col("number").is_null() | ~pl.col("number").is_finite() | pl.col("ts").is_null()
           | (pl.col("ts") < now - old) | (pl.col("ts") > now + 300)
           | ~pl.col("payload_stripe_customer_id").str.starts_with("cus_")
           | ~pl.col("event_name").is_in(list(names.values()))
           | pl.col("error_code").eq_missing("odd_code")).fill_null(True)
    df = df.with_columns(pl.col("ts").cast(pl.String).alias("timestamp"), bad.alias("bad"))
    cols = [c for c in df.collect_schema().names() if c not in DROPPED]
    df.filter(~pl.col("bad")).select(cols).sink_csv(sys.argv[2] + ".corrected.csv")
    q = df.filter(pl.col("bad")).select(*cols, pl.col("error_code").alias("mfx_code"))
    q.sink_csv(sys.argv[2] + ".quarantine.csv")
""")

PANDAS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pandas as pd
    now, skew, old = int(sys.argv[3]), 3600, 35 * 86400
    DROPPED = ("error_code", "error_message")
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
    cols = [c for c in df.columns if c not in DROPPED]
    df.loc[~bad, cols].to_csv(sys.argv[2] + ".corrected.csv", index=False)
    q = df.loc[bad, cols].copy()
    q["mfx_code"] = df.loc[bad, "error_code"]
    q.to_csv(sys.argv[2] + ".quarantine.csv", index=False)
""")


class Figures(NamedTuple):
    seconds: float  # wall clock
    rss: float  # peak RSS of the largest single process, MB
    cpu: float  # user + system seconds of the process and its children


GNU_TIME = "/usr/bin/time"


def timed(cmd: list[str]) -> Figures:
    """Figures of a child process: peak RSS and CPU as GNU time reports them when it is
    installed (wait4 otherwise: Linux starts a forked child's peak RSS at its parent's, so
    wait4 never reports less than this script's own size)."""
    gnu = os.path.exists(GNU_TIME)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        wrapped = [GNU_TIME, "-f", "%M %U %S", "-o", report.name, *cmd] if gnu else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}")
        if gnu:
            rss_kb, user, system = report.read().split()[-3:]
            return Figures(seconds, int(rss_kb) / 1024, float(user) + float(system))
    return Figures(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def prepare(
    work: Path, rows: int, mix: str, optional: int = 0, wide: int = 0, own: int = 0
) -> None:
    generate(work / "failed.csv", rows, mix, optional, wide, own)
    with open(work / "failed.jsonl") as lines, open(work / "failed.json", "w") as array:
        # the same rows as a JSON array, one element a line (as meterfix writes one)
        array.write("[\n")
        for at, line in enumerate(lines):
            array.write((",\n" if at else "") + line.rstrip("\n"))
        array.write("\n]\n")
    (work / "meters.json").write_text(json.dumps(METERS))
    (work / "rules.toml").write_text(rules_toml())
    customers = {f"ext-{i:06d}": f"cus_x{i:013d}" for i in range(EXTERNAL_IDS)}
    (work / "customers.json").write_text(json.dumps(customers))
    (work / "plain_copy.py").write_text(COPY)
    (work / "pandas_fix.py").write_text(PANDAS)
    (work / "polars_fix.py").write_text(POLARS)
    (work / "json_copy.py").write_text(JSON_COPY)


def outputs(work: Path, name: str) -> Path:
    """Where contender `name` writes: emptied before each of its runs (`rounds`), so that no
    run pays for replacing the last round's files (300 MB of outputs: 0.2-0.3 s of a
    `meterfix` run's wall time, alternating runs)."""
    return work / "out" / name.replace(" ", "-").replace("--", "")


def contenders(work: Path) -> dict[str, list[str]]:
    py, src = sys.executable, str(work / "failed.csv")
    pandas = [
        str(work / "pandas_fix.py"),
        src,
        str(outputs(work, "pandas") / "pd"),
        str(NOW),
        str(work / "customers.json"),
    ]
    polars = [str(work / "polars_fix.py"), src, str(outputs(work, "polars") / "pd"), *pandas[3:]]
    meterfix = str(Path(py).with_name("meterfix"))
    # pandas is installed here for its own contender: meterfix runs beside it, as on a
    # machine that has pandas (remediation.core keeps pyarrow from loading it)
    mfx = [meterfix, "remediate", "--meters", str(work / "meters.json")]
    mfx += ["--rules", str(work / "rules.toml"), "--now", str(NOW), "--json"]
    jsonl = str(work / "failed.jsonl")
    return {
        "csv copy": [py, str(work / "plain_copy.py"), src, str(outputs(work, "csv copy") / "c")],
        "pandas": [py, *pandas],
        "polars": [py, *polars],
        "meterfix": [*mfx, src, "--out", str(outputs(work, "meterfix"))],
        "meterfix big": [*mfx, str(work / "big.csv"), "--out", str(outputs(work, "meterfix big"))],
        "json copy": [
            py,
            str(work / "json_copy.py"),
            jsonl,
            str(outputs(work, "json copy") / "c"),
        ],
        "meterfix jsonl": [*mfx, jsonl, "--out", str(outputs(work, "meterfix jsonl"))],
        "meterfix json": [
            *mfx,
            str(work / "failed.json"),
            "--out",
            str(outputs(work, "meterfix json")),
        ],
        "meterfix jsonl big": [
            *mfx,
            str(work / "big.jsonl"),
            "--out",
            str(outputs(work, "meterfix jsonl big")),
        ],
        "meterfix --help": [meterfix, "--help"],
        # what the libraries alone hold: their pages counted in a run's peak RSS depend on the
        # page cache (files just installed are all in it: ~20 MB more than after a while)
        "imports": [py, "-c", "import remediation.engine"],
    }


def rounds(
    commands: dict[str, list[str]], wanted: list[str], count: int, work: Path
) -> dict[str, Figures]:
    """Median figures of each contender over `count` alternating rounds (the machine may be
    shared: alternating spreads its noise over every contender alike), each run writing
    into an empty directory (`outputs`)."""
    runs: dict[str, list[Figures]] = {name: [] for name in wanted}
    for _ in range(count):
        for name in wanted:
            shutil.rmtree(outputs(work, name), ignore_errors=True)
            outputs(work, name).mkdir(parents=True)
            runs[name].append(timed(commands[name]))
    return {
        name: Figures(
            statistics.median(f.seconds for f in got),
            max(f.rss for f in got),
            statistics.median(f.cpu for f in got),
        )
        for name, got in runs.items()
    }


def same_work(work: Path, wanted: list[str], rows: int) -> None:
    """Stop unless the fixing scripts and meterfix wrote every input row to the corrected or
    the quarantine file, with the columns meterfix keeps (the input's, less `error_code` and
    `error_message`): a script that drops rows or columns does less than meterfix and its
    ratio would mean nothing. (The polars script once lost every row whose `error_code` was
    empty, a null in its filter, and wrote 5 of the 27 columns of `--payload-columns 20`.)"""
    with open(work / "failed.csv", newline="") as src:
        header = next(csv.reader(src))
    kept = [name for name in header if name not in ("error_code", "error_message")]
    for name in ("pandas", "polars", "meterfix"):
        if name not in wanted:
            continue
        counted, columns = 0, None
        for path in sorted(outputs(work, name).glob("*.csv")):
            with open(path, newline="") as out:
                read = csv.reader(out)
                first = next(read)
                if ".corrected." in path.name:
                    columns = first
                counted += sum(1 for _ in read)
        if counted != rows or columns != kept:
            raise SystemExit(
                f"{name} wrote {counted:,} of {rows:,} rows, corrected columns {columns}: "
                "not the work meterfix does"
            )


def report(
    rows: int,
    big: int,
    mix: str,
    results: dict[str, Figures],
    more: tuple[int, int, int] = (0, 0, 0),
) -> None:
    """`more`: the JSON rows' optional keys, the more payload columns, the keys of their own."""
    base = results.get("csv copy", Figures(1.0, 0.0, 1.0))
    optional, wide, own = more
    keys = f", JSON rows with {optional} optional payload keys" if optional else ""
    keys += f", JSON rows each with {own} payload keys of their own" if own else ""
    keys += f", {wide} more payload columns" if wide else ""
    print(
        f"rows: {rows:,} ({mix} mix{keys}; big file: {big * rows:,}); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for name, got in results.items():
        print(
            f"{name:16s} {got.seconds:7.2f} s  {got.seconds / base.seconds:5.2f}x csv copy  "
            f"cpu {got.cpu:6.2f} s ({got.cpu / base.cpu:4.2f}x)  peak RSS {got.rss:6.1f} MB"
        )
    if "imports" in results:
        print(
            f"(the libraries alone peak at {results['imports'].rss:.0f} MB here: their pages "
            "in the page cache count; compare peak RSS within one run of this bench)"
        )
    print("targets:")
    for line in targets(big, results):
        print("  " + line)


def targets(big: int, results: dict[str, Figures]) -> list[str]:
    """Each target with its figure, for the contenders that ran."""

    def ratio(name: str, other: str) -> float | None:
        if name in results and other in results:
            return results[name].seconds / results[other].seconds
        return None

    lines = []
    for name, other, goal, label in (
        ("meterfix", "csv copy", 0.6, "CSV: meterfix / csv copy"),
        ("meterfix jsonl", "json copy", 1.0, "JSON Lines: meterfix / json copy"),
        ("meterfix json", "json copy", None, "JSON array: meterfix / json copy"),
        ("meterfix", "polars", 1.5, "meterfix / polars (same fixes)"),
        ("meterfix", "pandas", None, "meterfix / pandas (same fixes)"),
    ):
        got = ratio(name, other)
        if got is not None:
            wanted = f"(target <= {goal})" if goal else ""
            met = "" if goal is None else ("met" if got <= goal else "NOT met")
            lines.append(f"{label:34s} {got:5.2f} {wanted} {met}".rstrip())
    for one, many, label in (
        ("meterfix", "meterfix big", "peak RSS, CSV"),
        ("meterfix jsonl", "meterfix jsonl big", "peak RSS, JSON Lines"),
    ):
        if one in results and many in results:
            small, large = results[one].rss, results[many].rss
            met = "met" if max(small, large) <= 150 and large <= small * 1.15 else "NOT met"
            lines.append(
                f"{label + ' 1x -> ' + str(big) + 'x':34s} {small:.0f} -> {large:.0f} MB "
                f"(target <= 150 MB, flat) {met}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    parser.add_argument("--mix", choices=sorted(MIXES), default="varied")
    parser.add_argument("--big", type=int, default=4, help="the big file is this many times")
    parser.add_argument(
        "--optional-keys",
        type=int,
        default=0,
        help="JSON rows carry each of this many more payload keys or not (2**N layouts)",
    )
    parser.add_argument(
        "--payload-columns",
        type=int,
        default=0,
        help="every row carries this many more payload columns (CSV) and keys (JSON)",
    )
    parser.add_argument(
        "--own-keys",
        type=int,
        default=0,
        help="every JSON row carries this many payload keys no other row names",
    )
    args = parser.parse_args()
    more = (args.optional_keys, args.payload_columns, args.own_keys)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, args.rows, args.mix, *more)
        commands = contenders(work)
        wanted = args.only.split(",") if args.only else list(commands)
        if {"meterfix big", "meterfix jsonl big"} & set(wanted):  # the .jsonl beside it
            generate(work / "big.csv", args.big * args.rows, args.mix, *more)
        results = rounds(commands, wanted, args.rounds, work)
        same_work(work, wanted, args.rows)
    report(args.rows, args.big, args.mix, results, more)


if __name__ == "__main__":
    main()

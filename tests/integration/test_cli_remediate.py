"""`meterfix validate` / `meterfix remediate` through the real console script."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.web.quarantine import CSV_COLUMNS

DATA = Path(__file__).parent.parent / "data" / "usage"
METERFIX = str(Path(sys.executable).with_name("meterfix"))
NOW = "1764000000"


def meterfix(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METERFIX, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def common(*extra: str) -> list[str]:
    return [
        "--meters",
        str(DATA / "meters.json"),
        "--rules",
        str(DATA / "rules.toml"),
        "--now",
        NOW,
        *extra,
    ]


def test_remediate_csv_writes_rows_and_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = meterfix(
        "remediate",
        str(DATA / "failed_records.csv"),
        "--out",
        str(out),
        *common("--json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (
        summary["input_rows"],
        summary["valid"],
        summary["corrected"],
        summary["quarantined"],
    ) == (7, 1, 5, 1)
    assert summary["by_code"]["meter_event_invalid_value"] == {"corrected": 1, "quarantined": 1}
    corrected = [p for p in summary["outputs"]["corrected"]]
    assert all(Path(p).is_absolute() for p in corrected)
    with open(corrected[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["identifier"] for r in rows] == [f"r{n}-mfx1" for n in (1, 2, 3, 5, 7)]
    assert rows[0]["timestamp"] == NOW and rows[1]["payload_value"] == "1234"
    assert rows[2]["event_name"] == "api_requests"
    assert rows[3]["payload_stripe_customer_id"] == "cus_Q1a2B3c4"
    assert "error_code" not in rows[0]
    with open(summary["outputs"]["quarantine"][0], newline="") as handle:
        (quarantined,) = list(csv.DictReader(handle))
    assert (
        quarantined["identifier"] == "r4" and quarantined["mfx_code"] == "meter_event_invalid_value"
    )
    audit = Path(summary["outputs"]["audit"]).read_text().splitlines()
    assert any(json.loads(line).get("rule") == "successor_meter" for line in audit)
    again = meterfix(
        "remediate",
        str(DATA / "failed_records.csv"),
        "--out",
        str(tmp_path / "o2"),
        *common("--json"),
        cwd=tmp_path,
    )
    second = json.loads(again.stdout)
    for kind in ("corrected", "quarantine"):
        for a, b in zip(summary["outputs"][kind], second["outputs"][kind], strict=True):
            assert Path(a).read_bytes() == Path(b).read_bytes()


def test_remediate_jsonl_keeps_format(tmp_path: Path) -> None:
    proc = meterfix(
        "remediate",
        str(DATA / "failed_records.jsonl"),
        "--out",
        str(tmp_path),
        *common("--json", "--identifiers", "keep"),
        cwd=tmp_path,
    )
    summary = json.loads(proc.stdout)
    (path,) = summary["outputs"]["corrected"]
    assert path.endswith(".corrected.r1.jsonl")
    (row,) = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert row == {
        "identifier": "j1",
        "timestamp": 1764000000,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": 5},
    }


def test_validate_counts_and_exit_code(tmp_path: Path) -> None:
    proc = meterfix("validate", str(DATA / "failed_records.csv"), *common("--json"), cwd=tmp_path)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["valid"] == 1 and summary["outputs"]["corrected"] == []
    assert list(tmp_path.iterdir()) == [] or all(p.name != "out" for p in tmp_path.iterdir())
    good = tmp_path / "good.csv"
    good.write_text(
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        "a,1764000000,api_requests,cus_1,3\n"
    )
    ok = meterfix("validate", str(good), *common(), cwd=tmp_path)
    assert ok.returncode == 0 and "valid 1" in ok.stdout


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, (), "no such file"),
        (b"identifier,timestamp\nx,caf\xe9\n", (), "not UTF-8"),
        (b"", (), "empty file"),
        (
            gzip.compress(b"identifier,timestamp\nx,1\n", mtime=0),
            (),
            "a gzip-compressed file (it starts with 1f 8b): decompress it first",
        ),
        (b"a,b\n1,2\n", ("--rules", "BADRULES"), "bad rules"),
        (b"a,b\n1,2\n", ("--meters", "BADMETERS"), "cannot read meters"),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    tmp_path: Path, content: bytes | None, extra: tuple[str, ...], message: str
) -> None:
    target = tmp_path / "in.csv"
    if content is not None:
        target.write_bytes(content)
    (tmp_path / "bad.toml").write_text("[policy]\nfuture_skew_seconds = 'x'\n")
    (tmp_path / "bad.json").write_text("{not json")
    args = [
        a.replace("BADRULES", str(tmp_path / "bad.toml")).replace(
            "BADMETERS", str(tmp_path / "bad.json")
        )
        for a in extra
    ]
    base = common()
    if args:
        flag = args[0]
        base = [*base[: base.index(flag)], *base[base.index(flag) + 2 :], *args]
    proc = meterfix("remediate", str(target), "--out", str(tmp_path / "o"), *base, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [("/dev/zero", "/dev/zero: not a regular file"), ("DIR", "is a directory")],
)
def test_a_path_that_is_no_regular_file_is_named_so(
    tmp_path: Path, target: str, message: str
) -> None:
    """A device or a directory exists: "no such file" (said of /dev/zero) sent the operator
    looking for a typo."""
    path = str(tmp_path) if target == "DIR" else target
    for command in ("remediate", "validate"):
        out = ["--out", str(tmp_path / "o")] if command == "remediate" else []
        proc = meterfix(command, path, *out, *common(), cwd=tmp_path)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert message in proc.stderr, proc.stderr


# --- hostile input and files that are not usage --------------------------------------------

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command prints: no traceback, nothing reported twice."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "closed file" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("rules.toml", (DATA / "rules.toml").read_bytes(), "not a usage file: a TOML file"),
        ("meters.yaml", b"meters:\n  - id: mtr_1\n    event_name: api\n", "a YAML file"),
        ("rules.csv", b"# rules\n[policy]\nfuzzy_event_names = true\n", "its first line '# rules'"),
        ("rules.json", (DATA / "rules.toml").read_bytes(), "is no JSON array (a TOML table?)"),
        ("notes.jsonl", b"- a\n- b\n", "JSON Lines must start with an object"),
        (  # fed back, its rows were quarantined again with misleading reasons
            "quarantine.csv",
            (",".join(CSV_COLUMNS) + "\n" + ",".join(["1"] * len(CSV_COLUMNS)) + "\n").encode(),
            "meterfix's quarantine export (/api/quarantine.csv), its payload one JSON column",
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "remediate"])
def test_a_file_that_is_not_usage_is_one_error(
    tmp_path: Path, name: str, content: bytes, reason: str, command: str
) -> None:
    target = tmp_path / name
    target.write_bytes(content)
    out = ["--out", str(tmp_path / "out")] if command == "remediate" else []
    proc = meterfix(command, str(target), *out, *common("--json"), cwd=tmp_path)
    assert reason in one_error_line(proc)
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"data": 5}, "meters document: 'data' is int, not a list of meters"),
        ({"data": None}, "meters document: 'data' is null, not a list of meters"),
        (
            {"data": [{"id": "mtr_1", "event_name": "api", "customer_mapping": "cus_1"}]},
            "meter 'mtr_1': customer_mapping is a str, not an object",
        ),
        ([7], "meter #0 is a int, not an object"),
    ],
)
def test_meters_that_are_not_meters_are_one_error(
    tmp_path: Path, document: object, reason: str
) -> None:
    meters = tmp_path / "meters.json"
    meters.write_text(json.dumps(document))
    args = ["--meters", str(meters), "--now", NOW]
    proc = meterfix("validate", str(DATA / "failed_records.csv"), *args, cwd=tmp_path)
    assert one_error_line(proc) == f"Error: cannot read meters {meters}: {reason}"


def test_duplicate_header_is_a_whole_file_failure(tmp_path: Path) -> None:
    target = tmp_path / "dup.csv"
    target.write_text(
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,payload_value\n"
        "a,1764000000,api_requests,cus_1,5,500\n"
    )
    proc = meterfix("remediate", str(target), "--out", str(tmp_path / "o"), *common(), cwd=tmp_path)
    assert one_error_line(proc) == (
        f"Error: {target}: ambiguous header: column 'payload_value' appears twice "
        "(columns 5 and 6); nothing guessed"
    )


@pytest.mark.parametrize(
    "row",
    [
        "a,1764000000,api_requests,cus_1,1e5000,\n",
        "a," + "9" * 5000 + ",api_requests,cus_1,5,\n",
        "a,1764000000,api_requests,cus_1,1e100000000,meter_event_invalid_value\n",
    ],
)
def test_validate_oversized_numbers_reports_rows_not_tracebacks(tmp_path: Path, row: str) -> None:
    target = tmp_path / "big.csv"
    target.write_text(HEADER + row + "b,1764000000,api_requests,cus_1,5,\n")
    proc = meterfix("validate", str(target), *common("--json"), cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr == ""  # exit 1: a row is invalid
    summary = json.loads(proc.stdout)
    assert (summary["input_rows"], summary["valid"], summary["quarantined"]) == (2, 1, 1)


def test_remediate_names_an_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    out = blocker / "out"
    proc = meterfix(
        "remediate", str(DATA / "failed_records.csv"), "--out", str(out), *common(), cwd=tmp_path
    )
    line = one_error_line(proc)
    assert line == f"Error: --out {out}: Not a directory"
    assert "failed_records.csv" not in line


@pytest.mark.parametrize("command", ["validate", "remediate"])
def test_no_meters_and_no_key_says_what_to_do(tmp_path: Path, command: str) -> None:
    out = ["--out", str(tmp_path / "o")] if command == "remediate" else []
    proc = subprocess.run(
        [METERFIX, command, str(DATA / "failed_records.csv"), *out, "--now", NOW],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        # no STRIPE_API_KEY; the bundled sandbox's address points at a closed port
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STRIPE_API_BASE": CLOSED},
    )
    line = one_error_line(proc)
    assert "pass --meters or set STRIPE_API_KEY" in line and "Connection" not in line


CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_hostile_rows_are_quarantined_with_reasons_and_outputs_repeat(tmp_path: Path) -> None:
    target = tmp_path / "hostile.csv"
    rows = [
        "big,1764000000,api_requests,cus_1,1e309,meter_event_invalid_value",
        "ms,1796203186000,api_requests,cus_1,5,timestamp_in_future",
        "nul\x00id,1764000000,api_requests,cus_1,5,",
        "ok,1764000000,api_requests,cus_1,5,",
    ]
    target.write_text(HEADER + "\n".join(rows) + "\n")
    runs = []
    for name in ("o1", "o2"):
        proc = meterfix(
            "remediate", str(target), "--out", str(tmp_path / name), *common("--json"), cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    first, second = runs
    assert (first["input_rows"], first["valid"], first["quarantined"]) == (4, 1, 3)
    with open(first["outputs"]["quarantine"][0], newline="") as handle:
        reasons = {r["identifier"]: r["mfx_reason"] for r in csv.DictReader(handle)}
    assert reasons == {
        "big": "value '1e309' has 310 integer digits; at most 20 allowed",
        "ms": "timestamp 1796203186000 read as milliseconds is 2026-12-02T09:19:46Z, outside "
        "the accepted window 2025-10-20T16:00:00Z to 2025-11-24T17:00:00Z",
        "nul\x00id": "identifier 'nul\\x00id' holds a control character: U+0000 at position 4",
    }
    for kind in ("corrected", "quarantine"):
        for a, b in zip(first["outputs"][kind], second["outputs"][kind], strict=True):
            assert Path(a).read_bytes() == Path(b).read_bytes()


def test_the_readme_example_runs_as_described(tmp_path: Path) -> None:
    examples = Path(__file__).parent.parent.parent / "examples"
    args = ["--meters", str(examples / "meters.json"), "--rules", str(examples / "rules.toml")]
    args += ["--now", "2025-11-24T16:00:00Z", "--json"]
    out = ["--out", str(tmp_path / "out")]
    proc = meterfix("remediate", str(examples / "usage.csv"), *out, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    counts = [summary[k] for k in ("input_rows", "valid", "corrected", "quarantined")]
    assert counts == [9, 1, 5, 3]
    with open(summary["outputs"]["quarantine"][0], newline="") as handle:
        reasons = [row["mfx_reason"] for row in csv.DictReader(handle)]
    assert reasons[2] == "value '1e309' has 310 integer digits; at most 20 allowed"


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        ("\u00b2", "'²' is neither unix seconds nor ISO-8601"),  # "²".isdigit(): int() failed
        ("9" * 5000, f"'{'9' * 40}' is outside 1970-01-01 to 9999-12-31 (UTC)"),
        ("-5", "'-5' is neither unix seconds nor ISO-8601"),  # was taken: 1969
        ("253402300800", "'253402300800' is outside 1970-01-01 to 9999-12-31 (UTC)"),
        ("9999-12-31T23:59:59-01:00", "is outside 1970-01-01 to 9999-12-31 (UTC)"),
    ],
)
def test_a_reference_time_no_calendar_holds_is_refused_with_a_reason(
    tmp_path: Path, now: str, reason: str
) -> None:
    args = ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    proc = meterfix("validate", str(DATA / "failed_records.csv"), *args, "--now", now, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Invalid value for --now: ") and last.endswith(reason)


def test_a_reference_time_without_an_offset_is_utc(tmp_path: Path) -> None:
    """`--now 2025-11-24T16:00:00` was read in the machine's time zone (9 h early in Tokyo)."""
    args = ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TZ": "Asia/Tokyo"}
    runs = [
        subprocess.run(
            [
                METERFIX,
                "validate",
                str(DATA / "failed_records.csv"),
                *args,
                "--now",
                when,
                "--json",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        for when in ("2025-11-24T16:00:00", "1764000000")
    ]
    assert runs[0].returncode == runs[1].returncode and not runs[0].stderr
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout)
    assert json.loads(runs[0].stdout)["by_code"]["timestamp_in_future"] == {
        "corrected": 1,
        "quarantined": 0,
    }


def test_two_inputs_of_one_stem_never_replace_each_others_outputs_in_one_out(
    tmp_path: Path,
) -> None:
    """Outputs are named by the input's name without its extension: `day.csv`, then
    `day.jsonl`, remediated into one `--out` wrote `day.r1.audit.jsonl` (and, for a second
    CSV such as `day.txt`, `day.corrected.r1.csv`) over the first's, silently: the first
    file's corrected rows and its audit were gone. The second run is refused, naming the
    input whose outputs are there, and writes nothing; the same input again is allowed."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "day.csv").write_bytes((DATA / "failed_records.csv").read_bytes())
    (folder / "day.txt").write_bytes((DATA / "failed_records.csv").read_bytes())
    (folder / "day.jsonl").write_bytes((DATA / "failed_records.jsonl").read_bytes())
    first = meterfix("remediate", "in/day.csv", *common("--out", "out", "--json"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert "day.r1.audit.jsonl" in written and "day.corrected.r1.csv" in written
    for other in ("in/day.jsonl", "in/day.txt"):
        refused = meterfix("remediate", other, *common("--out", "out"), cwd=tmp_path)
        assert refused.returncode != 0
        [line] = refused.stderr.strip().splitlines()
        assert line == (
            f"Error: --out out holds the outputs of in/day.csv (day.r1.audit.jsonl), which "
            f"{other} would replace (one name without its extension): remediate it into "
            "another --out"
        )
        assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == written
    again = meterfix("remediate", "in/day.csv", *common("--out", "out"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == written


# --- rules and meters files: one line for any of them ----------------------------------------


def _config(tmp_path: Path, kind: str, source: str) -> str:
    """A rules or meters path of the named sort: a FIFO, a device, or a file nested 5,000 deep."""
    if source == "/dev/zero":
        return source
    path = tmp_path / f"config-{kind}"
    if source == "fifo":
        os.mkfifo(path)  # nobody writes it: opening it to read would wait for ever
    elif kind == "rules":
        path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    else:
        path.write_text("[" * 5000 + "]" * 5000)
    return str(path)


@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "deep"])
@pytest.mark.parametrize("kind", ["rules", "meters"])
def test_a_rules_or_meters_file_no_reader_can_finish_is_one_line(
    tmp_path: Path, kind: str, source: str
) -> None:
    """`--rules /dev/zero` or `--meters /dev/zero` read until memory ran out (a MemoryError
    traceback); a FIFO hung the command; TOML or JSON nested 5,000 deep ended in a
    RecursionError traceback thousands of lines long (the worker died the same way on such
    an MFX_RULES)."""
    path = _config(tmp_path, kind, source)
    args = [*common(), f"--{kind}", path]  # the last one given is taken
    proc = meterfix("validate", str(DATA / "failed_records.csv"), *args, cwd=tmp_path)
    words = {"rules": "bad rules", "meters": "cannot read meters"}[kind]
    deep = {"rules": "rules are not valid TOML: ", "meters": "meters JSON is "}[kind]
    why = f"{deep}nested too deep to read" if source == "deep" else "not a regular file"
    assert one_error_line(proc) == f"Error: {words} {path}: {why}"


def test_a_meters_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """A rules file with a byte order mark (Notepad's) was read, a meters file refused."""
    meters = tmp_path / "meters.json"
    meters.write_bytes(b"\xef\xbb\xbf" + (DATA / "meters.json").read_bytes())
    proc = meterfix(
        "validate",
        str(DATA / "failed_records.csv"),
        *common(),
        "--meters",
        str(meters),
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and json.loads(proc.stdout)["input_rows"] > 0, proc.stderr

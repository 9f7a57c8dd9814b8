"""`meterfix remediate`'s outputs as a run leaves them, through the real command in a
subprocess: never over its own input, never beside an earlier run's, never half there after
a failure or a kill, and printed as they are named."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.test_cli_remediate import METERFIX, common, meterfix

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
NOW = 1764000000


def _failed_records(path: Path, rows: int = 6) -> Path:
    """Rows Stripe refused: milliseconds (corrected) and a value that is no number
    (quarantined)."""
    lines = [
        f"r{i},{NOW * 1000},api_requests,cus_1,5,timestamp_in_future\n"
        if i % 2
        else f"r{i},{NOW},api_requests,cus_1,abc,meter_event_invalid_value\n"
        for i in range(rows)
    ]
    path.write_text(HEADER + "".join(lines))
    return path


def _left(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_an_input_named_as_its_own_output_is_refused_not_replaced(tmp_path: Path) -> None:
    """An edited quarantine file fed back into the folder it came from, under its own name:
    the run replaced it with its outputs (its hand-fixed rows in no file, exit 0)."""
    out = tmp_path / "out"
    out.mkdir()
    edited = _failed_records(out / "usage.quarantine.r1.csv")
    before = edited.read_bytes()
    proc = meterfix("remediate", str(edited), *common("--out", str(out)), cwd=tmp_path)
    assert proc.returncode != 0
    assert "is named as an output of its own run" in proc.stderr, proc.stderr
    assert edited.read_bytes() == before
    assert _left(out) == ["usage.quarantine.r1.csv"]
    link = tmp_path / "usage.csv"  # the same file under a link named otherwise
    link.symlink_to(edited)
    proc = meterfix("remediate", str(link), *common("--out", str(out)), cwd=tmp_path)
    assert proc.returncode != 0 and "is named as an output of its own run" in proc.stderr
    assert edited.read_bytes() == before


def test_a_second_run_into_the_same_out_leaves_none_of_the_firsts_outputs(tmp_path: Path) -> None:
    """The same command a month later (the clock moved: every row too old now): its outputs
    replaced the first run's of the same names, and the first run's corrected file stayed
    beside them, its rows also in the new quarantine file: one row in two outputs."""
    source = _failed_records(tmp_path / "usage.csv")
    out = tmp_path / "out"
    first = meterfix("remediate", str(source), *common("--out", str(out)), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "usage.corrected.r1.csv" in _left(out)
    later = [*common("--out", str(out))]
    later[later.index("--now") + 1] = str(NOW + 37 * 86400)
    second = meterfix("remediate", str(source), *later, "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["corrected"] == 0
    assert _left(out) == ["usage.quarantine.r1.csv", "usage.r1.audit.jsonl"]
    held = (out / "usage.quarantine.r1.csv").read_text().splitlines()
    assert len(held) == 1 + 6  # every row, once


def test_a_run_that_cannot_write_its_audit_leaves_no_output(tmp_path: Path) -> None:
    """A disk filling up as the audit's last lines were written: the corrected and quarantine
    files had been renamed to their final names already, complete-looking, beside no audit
    (and the run failed). Held here by a file size limit a byte short of the audit."""
    source = _failed_records(tmp_path / "usage.csv", rows=400)
    whole = tmp_path / "whole"
    proc = meterfix("remediate", str(source), *common("--out", str(whole)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    audit = (whole / "usage.r1.audit.jsonl").stat().st_size
    assert all(p.stat().st_size < audit for p in whole.iterdir() if p.suffix == ".csv")

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails, no signal kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (audit - 1, audit - 1))

    out = tmp_path / "out"
    out.mkdir()
    failed = subprocess.run(
        [METERFIX, "remediate", str(source), *common("--out", str(out))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        preexec_fn=limited,
    )
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr, failed.stderr
    # the message names where the write found no room (it named the input read)
    assert f"--out {out}: File too large" in failed.stderr, failed.stderr
    assert _left(out) == []  # neither final outputs nor hidden temporary files


def test_a_run_stopped_by_sigterm_leaves_no_temporary_files(tmp_path: Path) -> None:
    """A process manager's SIGTERM left a 1M-row run's hidden `.tmp` outputs (~230 MB)
    behind; Ctrl-C removed them. SIGTERM now stops it as Ctrl-C does."""
    source = tmp_path / "big.csv"
    row = f"{NOW * 1000},api_requests,cus_1,5,timestamp_in_future\n"
    with source.open("w") as handle:
        handle.write(HEADER)
        handle.writelines(f"b{i},{row}" for i in range(400_000))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [METERFIX, "remediate", str(source), *common("--out", str(out))],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and any(p.name.endswith(".tmp") for p in out.iterdir())):
        assert proc.poll() is None, "the run ended before it was stopped"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert _left(out) == []


def test_paths_and_codes_are_printed_as_they_are_named(tmp_path: Path) -> None:
    """Rich read them as markup: `usage[eu].csv` was shown as `usage.csv`, and an error
    code `[/oops]` ended the table in a traceback."""
    (tmp_path / "usage[eu].csv").write_text(HEADER + f"x1,{NOW},api_requests,cus_1,5,[/oops]\n")
    out = tmp_path / "out [x]"
    proc = meterfix("remediate", "usage[eu].csv", *common("--out", "out [x]"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage[eu].csv" in proc.stdout
    assert "[/oops]" in proc.stdout
    # one line, however long the path
    printed = f"quarantine: {(out / 'usage[eu].quarantine.r1.csv').resolve()}\n"
    assert printed in proc.stdout, proc.stdout


def test_a_meters_file_holding_no_meters_is_refused(tmp_path: Path) -> None:
    """`[]` as the meters file: every row was quarantined `no_meter` and the run exited 0,
    as if the usage named meters nobody made; the command's own rule is that no meters at
    all is bad input."""
    source = _failed_records(tmp_path / "usage.csv")
    (tmp_path / "none.json").write_text("[]")
    for command in ("remediate", "validate"):
        args = [command, str(source), "--meters", "none.json", "--now", str(NOW)]
        proc = meterfix(*args, *(["--out", "out"] if command == "remediate" else []), cwd=tmp_path)
        assert proc.returncode != 0
        assert "none.json holds no meters" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() or _left(tmp_path / "out") == []


def test_an_input_whose_name_is_not_utf8_is_refused_with_its_reason(tmp_path: Path) -> None:
    """A file named on a Latin-1 system (`us\\xe9.csv`) failed on its name with a bare
    `UnicodeEncodeError` (writing the audit's `source`). Held with U+FFFD for the byte,
    `us\\xe9.csv` and `us\\xe8.csv` would be one name: their rows without identifiers given the
    same `row-…` identifiers, the second run's outputs put over the first's. It is refused,
    saying why, before anything is written (validate too)."""
    out = tmp_path / "out"
    for raw in (b"us\xe9.csv", b"us\xe8.csv"):
        named = tmp_path / os.fsdecode(raw)
        _failed_records(named)
        proc = meterfix("remediate", str(named), *common("--out", str(out)), cwd=tmp_path)
        assert proc.returncode != 0
        shown = raw.decode("utf-8", "backslashreplace")
        assert f"{shown}: its name is not UTF-8 (byte 0x{raw[2]:02x}); rename it" in proc.stderr
        assert "Traceback" not in proc.stderr and "UnicodeEncodeError" not in proc.stderr
        check = meterfix("validate", str(named), *common()[:4], cwd=tmp_path)
        assert check.returncode != 0 and "its name is not UTF-8" in check.stderr
    assert not out.exists()


def test_a_run_refused_for_its_options_creates_no_out(tmp_path: Path) -> None:
    """`--out` was created before the other options were read: a mistyped `--now` or
    `--meters` left an empty new directory behind its error."""
    source = _failed_records(tmp_path / "usage.csv")
    for option, value, said in (
        ("--now", "yesterday", "--now"),
        ("--meters", str(tmp_path / "missing.json"), "cannot read meters"),
        ("--rules", str(tmp_path / "missing.toml"), "cannot read rules"),
    ):
        out = tmp_path / f"out{option}"
        args = [*common("--out", str(out))]
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
        proc = meterfix("remediate", str(source), *args, cwd=tmp_path)
        assert proc.returncode != 0 and said in proc.stderr, proc.stderr
        assert not out.exists(), option

"""Derived identifiers: exact forms, no collisions with originals, lineage (never spelling)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediation import lineage as lineage_module
from remediation.identifiers import (
    Ancestor,
    Identifiers,
    Lineage,
    derived_identifier,
    row_identifier,
)
from remediation.lineage import (
    Parent,
    input_lineage,
    may_hold,
    reserved_originals,
    run_generation,
    trace_ancestors,
)

GENERATIONS = st.integers(min_value=1, max_value=999)
TEXT = st.text(min_size=1, max_size=110)
# originals that look like our own outputs, of any generation and either rule
SUFFIXED = st.builds(
    lambda base, kind, n: f"{base}-{kind}{n}",
    st.text(min_size=1, max_size=100),
    st.sampled_from(["mfx", "r", "r0"]),
    st.integers(min_value=0, max_value=1001),
)
ORIGINALS = st.lists(st.one_of(TEXT, SUFFIXED), min_size=1, max_size=40)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_ids(originals: list[str], generation: int) -> list[str]:
    """Derived identifiers of one input holding `originals` (the reserved set as runs make it)."""
    ids = Identifiers("usage.csv", generation, Lineage(), keep=False)
    pairs = [(original, row) for row, original in enumerate(originals, 1)]
    reserved = reserved_originals(pairs, ids)
    run = Identifiers("usage.csv", generation, Lineage({}, reserved), keep=False)
    return [str(run.new(original, row)) for original, row in pairs]


@settings(max_examples=300, deadline=None)
@given(originals=ORIGINALS, generation=GENERATIONS)
def test_derived_identifiers_never_collide_and_are_stable(
    originals: list[str], generation: int
) -> None:
    derived = run_ids(originals, generation)
    assert not set(derived) & set(originals)  # never another row's own identifier
    assert all(len(identifier) <= 100 for identifier in derived)
    assert run_ids(originals, generation) == derived  # deterministic
    by_original = dict(zip(originals, derived, strict=True))
    assert len(set(by_original.values())) == len(by_original)  # one per original
    for original, identifier in zip(originals, derived, strict=True):
        assert identifier == by_original[original]  # the same original, the same identifier
        assert identifier.endswith(f"-mfx{generation}")


@settings(max_examples=200, deadline=None)
@given(original=TEXT, generation=GENERATIONS, other=ORIGINALS)
def test_exact_forms(original: str, generation: int, other: list[str]) -> None:
    plain = f"{original}-mfx{generation}"
    reserved = frozenset(o for o in other if o.endswith(f"-mfx{generation}"))
    hashed = f"{original[:80]}-{sha(original)[:12]}-mfx{generation}"
    expected = plain if len(plain) <= 100 and plain not in reserved else hashed
    assert derived_identifier(original, generation, reserved) == expected
    # stable per original and generation: another input's originals change only a clash
    if plain not in reserved:
        assert derived_identifier(original, generation) == expected


def test_identifiers_of_customers_are_not_read_as_generations() -> None:
    assert run_ids(["order-r099", "order-r100"], 1) == ["order-r099-mfx1", "order-r100-mfx1"]
    assert run_ids(["order-r1", "order-r01"], 1) == ["order-r1-mfx1", "order-r01-mfx1"]
    clash = run_ids(["abc", "abc-mfx1"], 1)
    assert clash == [f"abc-{sha('abc')[:12]}-mfx1", "abc-mfx1-mfx1"]
    long = "x" * 97
    assert run_ids([long], 12) == [f"{'x' * 80}-{sha(long)[:12]}-mfx12"]


def test_row_without_identifier() -> None:
    digest = hashlib.sha256("in/usage é.csv".encode() + b"\x00" + b"12").hexdigest()
    assert row_identifier("in/usage é.csv", 12) == "row-" + digest[:16]
    ids = Identifiers("in/usage é.csv", 2, Lineage(), keep=False)
    assert ids.new(None, 12) == f"row-{digest[:16]}-mfx2"
    assert ids.new("", 12) == f"row-{digest[:16]}-mfx2"
    assert row_identifier("k", 1) != row_identifier("k\x001", 0)  # the pair is unambiguous
    assert Identifiers("k", 1, Lineage(), keep=True).new(None, 1) is None


def test_the_original_comes_from_lineage() -> None:
    lineage = Lineage({"weird-name": Ancestor("o", "no_meter", 1)})
    ids = Identifiers("s", 2, lineage, keep=False)
    assert ids.new("weird-name", 1) == "o-mfx2"
    assert ids.new("o-mfx1", 1) == "o-mfx1-mfx2"  # not in lineage: an original


class FakeAudit:
    """The correction audit as `ParentLookup`, counting the identifiers asked for."""

    def __init__(self, parents: dict[str, Parent]) -> None:
        self.parents = parents
        self.asked: list[list[str]] = []

    def __call__(self, identifiers: list[str]) -> dict[str, Parent]:
        self.asked.append(identifiers)
        return {i: self.parents[i] for i in identifiers if i in self.parents}


def test_trace_through_the_audit_and_the_objects_generation() -> None:
    audit = FakeAudit(
        {
            "o-mfx2": Parent("o-mfx1", "meter_event_customer_not_found", 2),
            "o-mfx1": Parent("o", "no_meter", 1),
            "kept": Parent("kept", "no_meter", 1),  # a run with --identifiers keep
        }
    )
    found = trace_ancestors(["o-mfx2", "p-mfx2", "q-r2", "kept", "inv-r7"], 2, audit)
    assert found == {
        "o-mfx2": Ancestor("o", "meter_event_customer_not_found", 2),
        "p-mfx2": Ancestor("p", None, 2),  # re-sent unchanged: the object's lineage says g2
        "q-r2": Ancestor("q", None, 2),  # an output of the earlier rule
        "kept": Ancestor("kept", "no_meter", 1),
    }


def _traced_one_by_one(
    names: list[str], generation: int, parents: dict[str, Parent]
) -> dict[str, Ancestor]:
    """Each identifier traced on its own, one step after the other (`_step`), none left out."""
    found = {}
    for name in dict.fromkeys(names):
        trace = lineage_module._Trace(name, generation)
        for _ in range(lineage_module.MAX_DEPTH):
            if not lineage_module._step(trace, parents.get(trace.at)):
                break
        if trace.wrote:
            found[name] = Ancestor(trace.at, trace.code, trace.wrote)
    return found


BASES = st.sampled_from(["a", "b", "c-mfx1", "d-r2"])
SPELT = st.builds(
    lambda base, suffix: base + suffix,
    BASES,
    st.sampled_from(["", "-mfx1", "-mfx2", "-mfx3", "-r1", "-r2", "-mfx1-mfx2", "-r"]),
)


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(SPELT, max_size=30),
    generation=st.integers(min_value=0, max_value=3),
    written=st.dictionaries(
        SPELT,
        st.builds(Parent, SPELT, st.sampled_from(["c1", "c2"]), st.integers(1, 3)),
        max_size=8,
    ),
    batch=st.integers(min_value=1, max_value=7),
)
def test_traced_in_batches_as_one_by_one(
    names: list[str], generation: int, written: dict[str, Parent], batch: int
) -> None:
    """The batches and what each leaves out before tracing (no parent and, with no
    generation, anything; with one, no suffix of it) find what tracing every identifier on
    its own finds."""
    found = trace_ancestors(names, generation, FakeAudit(written), batch)
    assert found == _traced_one_by_one(names, generation, written)


def test_no_lineage_no_ancestors_whatever_the_spelling() -> None:
    names = ["inv-r7", "x-r1000", "plain-r1", "abc-mfx1"]
    assert trace_ancestors(names, 0, FakeAudit({})) == {}
    assert trace_ancestors(names, 1, FakeAudit({})) == {
        "plain-r1": Ancestor("plain", None, 1),
        "abc-mfx1": Ancestor("abc", None, 1),
    }  # only because the object's metadata says we wrote it in generation 1


def test_a_first_run_traces_only_what_the_audit_wrote() -> None:
    """Input of no generation of ours (a first run): identifiers without a parent in the
    audit stay where they are; one with a parent is traced back as far as the audit goes,
    asking only for what is still moving."""
    audit = FakeAudit(
        {"a-mfx2": Parent("a-mfx1", "no_meter", 2), "a-mfx1": Parent("a", "other_code", 1)}
    )
    found = trace_ancestors(["z", "a-mfx2", "b-mfx1", "y", "z"], 0, audit)
    assert found == {"a-mfx2": Ancestor("a", "no_meter", 2)}
    assert audit.asked == [["a-mfx2", "b-mfx1", "y", "z"], ["a-mfx1"], ["a"]]


def test_a_run_writes_above_every_generation_that_wrote_its_input() -> None:
    """An input whose object names no generation (1 for the run) holding `abc-mfx1`, which
    the audit says generation 1 wrote, and `def-mfx3` of generation 3: the run is generation
    4, and no row of it goes out under an identifier it came in with (`abc-mfx1` again)."""
    audit = FakeAudit(
        {
            "abc-mfx1": Parent("abc", "timestamp_in_future", 1),
            "def-mfx3": Parent("def-mfx2", "no_meter", 3),
            "def-mfx2": Parent("def", "no_meter", 2),
        }
    )
    found = trace_ancestors(["abc-mfx1", "plain", "def-mfx3"], 0, audit)
    assert run_generation(1, {}) == 1
    assert run_generation(1, {"abc-mfx1": found["abc-mfx1"]}) == 2
    assert run_generation(1, found) == 4
    assert run_generation(7, found) == 7  # the object's own generation, when higher
    ids = Identifiers("src", run_generation(1, found), Lineage(found), keep=False)
    written = [ids.new(i, n) for n, i in enumerate(["abc-mfx1", "plain", "def-mfx3"], 1)]
    assert written == ["abc-mfx4", "plain-mfx4", "def-mfx4"]


def test_trace_asks_in_batches() -> None:
    audit = FakeAudit({f"x{n}": Parent(f"y{n}", "c", 1) for n in range(0, 1200, 7)})
    found = trace_ancestors((f"x{n}" for n in range(1200)), 0, audit, batch=500)
    assert len(found) == len(range(0, 1200, 7))
    assert max(len(batch) for batch in audit.asked) <= 500


@pytest.mark.parametrize(("text", "scanned"), [("a-mfx1", True), ("a-mfx2", False)])
def test_input_lineage_reads_rows_only_when_needed(
    tmp_path: Path, text: str, scanned: bool
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"identifier\n{text}\n")
    calls: list[int] = []

    def rows() -> Iterator[tuple[str | None, int]]:
        calls.append(1)
        yield text, 1

    lineage = input_lineage(path, rows, "in.csv", 1)
    assert bool(calls) == scanned
    assert lineage.reserved == (frozenset({text}) if scanned else frozenset())


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([b"a", b"-", b"-mfx", b"1", b"\\", b"u", b"\\u", b"x", b"x" * 9]),
        max_size=40,
    ),
    block=st.integers(5, 40),  # at least the needle: a block keeps its last bytes only
    escapes=st.booleans(),
    hits=st.integers(1, 3),
)
def test_may_hold_is_a_plain_search_whatever_the_blocks(
    tmp_path_factory: pytest.TempPathFactory,
    data: list[bytes],
    block: int,
    escapes: bool,
    hits: int,
) -> None:
    """The scan in blocks (a backslash looked for before a `\\u`; the needle by its rarest
    byte, checked where it is met, then searched for where that byte is met often) finds what
    a search of the whole file finds: a needle or an escape across two blocks included."""
    text = b"".join(data)
    path = tmp_path_factory.mktemp("scan") / "f.jsonl"
    path.write_bytes(text)
    expected = b"-mfx1" in text or (escapes and b"\\u" in text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lineage_module, "SCAN_BLOCK", block)
        patch.setattr(lineage_module, "ANCHOR_HITS", hits)
        assert may_hold(path, b"-mfx1", escapes) == expected

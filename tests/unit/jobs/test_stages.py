"""Stage timing of a run: nested stages count once, in the innermost stage."""

from __future__ import annotations

import pytest

from service.jobs import stages as stages_module
from service.jobs.stages import Stage, Stages


def test_an_inner_stage_is_not_counted_again_by_the_outer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 3.0, 10.0, 20.0, 21.5])  # perf_counter readings, in call order
    monkeypatch.setattr(stages_module.time, "perf_counter", lambda: next(clock))
    stages = Stages()
    with stages.timing(Stage.REMEDIATE), stages.timing(Stage.DATABASE):  # 0 .. 10, 1 .. 3
        pass
    with stages.timing(Stage.DATABASE):  # 20 .. 21.5
        pass
    assert stages.fields() == {"remediate": 8.0, "database": 3.5}


def test_a_failing_stage_still_counts() -> None:
    stages = Stages()
    with pytest.raises(RuntimeError), stages.timing(Stage.UPLOAD):
        raise RuntimeError("bucket down")
    assert set(stages.fields()) == {"upload"} and stages.seconds[Stage.DOWNLOAD] == 0


def test_time_from_another_thread_adds_to_its_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit load runs beside the uploads: its seconds are added in full, and the stage
    open on this thread is not shortened by them."""
    clock = iter([0.0, 4.0])
    monkeypatch.setattr(stages_module.time, "perf_counter", lambda: next(clock))
    stages = Stages()
    with stages.timing(Stage.UPLOAD):  # 0 .. 4
        stages.add(Stage.DATABASE, 5.0)
    assert stages.fields() == {"upload": 4.0, "database": 5.0}

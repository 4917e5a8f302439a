"""The pure rollout functions: selectors and progress from device reports."""

from __future__ import annotations

from edgefleet.controller.rollouts.planner import (
    DeviceReport,
    matches,
    rollout_progress,
    select_devices,
)


def test_selector_matches_every_pair() -> None:
    assert matches({"site": "a"}, {"site": "a", "line": "1"})
    assert not matches({"site": "a", "line": "2"}, {"site": "a", "line": "1"})
    assert not matches({"site": "a"}, {})
    assert matches({}, {"site": "b"})


def test_select_devices_sorted() -> None:
    fleet = [("d2", {"site": "a"}), ("d1", {"site": "a"}), ("d3", {"site": "b"})]
    assert select_devices({"site": "a"}, fleet) == ["d1", "d2"]
    assert select_devices({}, fleet) == ["d1", "d2", "d3"]


def _r(device_id: str, **kw: str | None) -> DeviceReport:
    return DeviceReport(device_id=device_id, desired_model="m", desired_version="v2", **kw)  # type: ignore[arg-type]


def test_running_until_every_device_committed() -> None:
    reports = [
        _r("a", model="m", version="v2", phase="COMMITTED"),
        _r("b", model="m", version="v2", phase="HEALTH_CHECK"),
        _r("c", model="m", version="v1", phase="DOWNLOADING"),
    ]
    p = rollout_progress("m", {"v2"}, reports)
    assert (p.total, p.done, p.failed) == (3, 1, 0)


def test_a_resigned_copy_counts_as_the_version() -> None:
    reports = [_r(d, model="m", version="v2-rb7", phase="COMMITTED") for d in "ab"]
    assert rollout_progress("m", {"v2", "v2-rb7"}, reports).done == 2
    assert rollout_progress("m", {"v2"}, reports).done == 0


def test_a_refusal_after_the_assignment_fails_the_device_with_its_reason() -> None:
    reports = [_r("a", model="m", version="v1", phase="COMMITTED"),
               _r("b", model="m", version="v2", phase="COMMITTED")]  # fmt: skip
    why = {"a": "director/image metadata: release 1 is lower than installed release 3",
           "b": "an old refusal"}  # fmt: skip
    p = rollout_progress("m", {"v2"}, reports, why)
    assert [(d.failed, d.refused) for d in p.devices] == [(True, why["a"]), (False, None)]


def test_a_failed_event_fails_the_device_a_stale_failed_phase_does_not() -> None:
    reports = [
        _r("a", model="m", version="v2", phase="COMMITTED"),
        _r("b", model="m", version="v1", phase="REVERTED", failed_model="m", failed_version="v2"),
        _r("c", model="m", version="v1", phase="FAILED"),  # from an attempt before this one
        _r("d", model="m", version="v2", phase="FAILED"),  # runs v2; failed something else
    ]
    p = rollout_progress("m", {"v2"}, reports)
    assert [d.failed for d in p.devices] == [False, True, False, False]


def test_failed_event_for_version_counts_even_after_retargeting() -> None:
    report = DeviceReport(
        "a", model="m", version="v1", phase="REVERTED",
        desired_model="m", desired_version="v3", failed_model="m", failed_version="v2",
    )  # fmt: skip
    assert rollout_progress("m", {"v2"}, [report]).failed == 1
    # ... but a revert of v2 says nothing about a rollout of v3 beyond "not yet".
    other = DeviceReport("a", model="m", version="v1", phase="IDLE", failed_model="m",
                         failed_version="v2")  # fmt: skip
    p = rollout_progress("m", {"v3"}, [other])
    assert (p.done, p.failed) == (0, 0)


def test_committed_on_target_is_not_failed_by_old_failure() -> None:
    report = _r("a", model="m", version="v2", phase="COMMITTED", failed_model="m",
                failed_version="v2")  # fmt: skip
    p = rollout_progress("m", {"v2"}, [report])
    assert (p.done, p.failed) == (1, 0)

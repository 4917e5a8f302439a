"""Cohorts: deterministic, stratified, and the control group."""

from __future__ import annotations

from edgefleet.controller.rollouts.cohorts import cohort_order, control_group


def _fleet(sites: int, per_site: int) -> dict[str, dict[str, str]]:
    return {
        f"cam-{s}-{i}": {"site": f"store-{s}", "camera": f"c{i % 2}"}
        for s in range(sites)
        for i in range(per_site)
    }


def test_order_is_deterministic_and_differs_per_rollout() -> None:
    fleet = _fleet(3, 5)
    first = cohort_order(1, fleet)
    assert first == cohort_order(1, dict(reversed(list(fleet.items()))))
    assert sorted(first) == sorted(fleet)
    assert cohort_order(2, fleet) != first


def test_a_device_that_joins_does_not_reshuffle_the_others() -> None:
    fleet = _fleet(2, 6)
    before = cohort_order(9, fleet)
    after = cohort_order(9, {**fleet, "cam-new": {"site": "store-0"}})
    assert [d for d in after if d != "cam-new"] == before


def test_stratified_first_stage_spans_every_site() -> None:
    fleet = _fleet(4, 10)  # 40 devices; 10 % = 4 devices
    for rollout_id in range(1, 30):
        first = cohort_order(rollout_id, fleet, stratify_by="site")[:4]
        assert {fleet[d]["site"] for d in first} == {f"store-{s}" for s in range(4)}
    # Without stratification some rollout puts two of its first four in one site.
    assert any(
        len({fleet[d]["site"] for d in cohort_order(r, fleet)[:4]}) < 4 for r in range(1, 30)
    )


def test_stratified_handles_uneven_sites_and_missing_label() -> None:
    fleet = {**_fleet(1, 5), "odd": {}}
    order = cohort_order(3, fleet, stratify_by="site")
    assert sorted(order) == sorted(fleet)
    assert "odd" in order[:2]  # its own stratum ("" value) takes a turn at once


def test_control_group_is_the_rest_matched_on_labels() -> None:
    fleet = _fleet(2, 4)
    canaries = ["cam-0-0"]
    assert control_group(fleet, canaries) == sorted(set(fleet) - {"cam-0-0"})
    matched = control_group(fleet, canaries, ["site", "camera"])
    assert matched == ["cam-0-2"]  # same site, same camera
    # No device shares the labels: fall back to every other matching device.
    assert control_group({"a": {"site": "x"}, "b": {"site": "y"}}, ["a"], ["site"]) == ["b"]

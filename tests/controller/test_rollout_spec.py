"""The rollout spec: one model for the API body, the CLI flags and the YAML file."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest
import yaml
from edgefleet.controller.rollouts.cron import cron_matches, parse_cron
from edgefleet.controller.rollouts.spec import (
    ML_GATES,
    Metric,
    RolloutSpec,
    Stage,
    parse_duration,
    parse_stages,
)
from edgefleet.controller.rollouts.windows import may_install
from pydantic import ValidationError

YAML = """
model: shapes
version: v2
selector: {fleet: demo}
stages: "1,10%,50%,100%"
soak: 5m
gates:
  - {metric: mean_confidence_ratio, threshold: 0.9, min_samples: 50}
  - {metric: psi, threshold: 0.2, min_samples: 50}
on_failure: rollback
max_concurrent: 5
maintenance_windows:
  - {cron: "* 1-4 * * *", timezone: Europe/Berlin, selector: {site: store-1}}
priority: 3
stratify_by: site
"""


def test_yaml_file_is_the_same_spec_as_the_api_body() -> None:
    spec = RolloutSpec.model_validate(yaml.safe_load(YAML))
    assert [str(s) for s in spec.stages] == ["1", "10%", "50%", "100%"]
    assert spec.soak_s == 300.0
    assert spec.gates[0].metric is Metric.MEAN_CONFIDENCE_RATIO
    assert (spec.on_failure, spec.max_concurrent, spec.priority) == ("rollback", 5, 3)
    # What the API stores and returns validates back to the same spec.
    assert RolloutSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_defaults_are_the_skeleton_single_full_stage() -> None:
    spec = RolloutSpec(model="m", version="v1")
    assert spec.stage_counts(7) == [7]
    assert (spec.soak_s, spec.gates, spec.on_failure) == (0.0, [], "pause")
    assert spec.control_labels == []


def test_control_is_matched_on_the_stratum_unless_told_otherwise() -> None:
    assert RolloutSpec(model="m", version="v", stratify_by="site").control_labels == ["site"]
    spec = RolloutSpec(model="m", version="v", stratify_by="site", match_labels=["site", "cam"])
    assert spec.control_labels == ["site", "cam"]


def test_stage_counts_round_up_and_never_shrink() -> None:
    spec = RolloutSpec(model="m", version="v", stages="1,10%,50%,100%")  # type: ignore[arg-type]
    assert spec.stage_counts(20) == [1, 2, 10, 20]
    assert spec.stage_counts(10) == [1, 1, 5, 10]
    assert spec.stage_counts(3) == [1, 1, 2, 3]
    assert spec.stage_counts(0) == [0, 0, 0, 0]
    assert RolloutSpec(model="m", version="v", stages="5,1").stage_counts(10) == [5, 5]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0),
                          ("250ms", 0.25)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    [{"stages": "1,ten%"}, {"stages": "0"}, {"stages": "150%"}, {"soak": "5 parsecs"},
     {"on_failure": "explode"}, {"gates": [{"metric": "vibes", "threshold": 1}]},
     {"maintenance_windows": [{"cron": "* 25 * * *"}]},
     {"maintenance_windows": [{"cron": "* * * *"}]},
     {"maintenance_windows": [{"cron": "* * * * *", "timezone": "Mars/Olympus"}]},
     {"surprise": 1},
     # limits: numbers no person plans with, sizes that only cost the controller
     {"stages": [10**30]}, {"stages": ",".join(["1"] * 5000)}, {"priority": 10**30},
     {"max_concurrent": 10**30}, {"soak": "400d"}, {"install_timeout_s": 1e300},
     {"gates": [{"metric": "psi", "threshold": float("nan")}]},
     {"gates": [{"metric": "psi", "threshold": 0.2, "min_samples": 10**30}]},
     {"gates": [{"metric": "psi", "threshold": 0.2}] * 65},
     {"selector": {f"k{i}": "v" for i in range(17)}}, {"selector": {"k": "v" * 129}},
     {"model": "../etc"}, {"model": ""}, {"version": ""}, {"version": "v" * 65}],
)  # fmt: skip
def test_bad_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RolloutSpec.model_validate({"model": "m", "version": "v", **bad})


def test_ml_gates_shortcut() -> None:
    spec = RolloutSpec.model_validate({"model": "m", "version": "v", "gates": "ml"})
    assert spec.gates == list(ML_GATES)


def test_parse_stages() -> None:
    assert parse_stages("1, 25%") == [Stage(count=1), Stage(percent=25)]
    with pytest.raises(ValueError, match="no stages"):
        parse_stages(" , ")


def test_cron_fields() -> None:
    assert parse_cron("*/15 1-3 * * 1,5")[0] == frozenset({0, 15, 30, 45})
    tue_0230 = datetime(2026, 11, 24, 2, 30, tzinfo=timezone.utc)  # a Tuesday
    assert cron_matches("* 2 * * 2", tue_0230)
    assert not cron_matches("* 2 * * 0,6", tue_0230)
    assert cron_matches("30 2 24 11 *", tue_0230)
    assert cron_matches("* * * * 7", datetime(2026, 11, 29, 0, 0, tzinfo=timezone.utc))  # Sunday


def test_maintenance_window_in_its_time_zone_and_selector() -> None:
    spec = RolloutSpec.model_validate(yaml.safe_load(YAML))
    windows = spec.maintenance_windows
    utc_0130 = datetime(2026, 11, 23, 1, 30, tzinfo=timezone.utc)  # 02:30 in Berlin
    utc_0430 = datetime(2026, 11, 23, 4, 30, tzinfo=timezone.utc)  # 05:30 in Berlin
    assert may_install(windows, {"site": "store-1"}, utc_0130)
    assert not may_install(windows, {"site": "store-1"}, utc_0430)
    assert may_install(windows, {"site": "store-2"}, utc_0430)  # no window covers it


def test_cli_builds_the_same_spec_from_a_file_and_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgefleet.shared.errors import ConfigError

    from edgefleet.cli.rollouts import RolloutFlags, rollout_body

    path = tmp_path / "rollout.yaml"
    path.write_text(YAML)

    ns = RolloutFlags

    from_file = rollout_body(ns(file=str(path)))
    assert from_file == RolloutSpec.model_validate(yaml.safe_load(YAML)).model_dump(mode="json")
    overridden = rollout_body(ns(file=str(path), target="shapes:v9", soak="10s",
                                 gate=["psi:0.3:20"], selector=["line=2"]))  # fmt: skip
    assert (overridden["version"], overridden["soak_s"]) == ("v9", 10.0)
    assert overridden["selector"] == {"fleet": "demo", "line": "2"}
    assert [g["metric"] for g in overridden["gates"]] == ["psi"]
    plain = rollout_body(ns(target="shapes:v2", gate=["ml"]))
    assert plain["stages"] == [{"count": None, "percent": 100.0}]
    assert len(plain["gates"]) == len(ML_GATES)
    assert plain["install_timeout_s"] == 1800.0  # 30 min unless given
    assert rollout_body(ns(target="shapes:v2", install_timeout="5m"))["install_timeout_s"] == 300
    for bad, msg in ((ns(), "NAME:VERSION"), (ns(target="m:v", stages="1,x%"), "stages"),
                     (ns(target="m:v", gate=["psi"]), "bad gate"),
                     (ns(file=str(tmp_path / "nope.yaml")), "cannot read")):  # fmt: skip
        with pytest.raises(ConfigError, match=msg):
            rollout_body(bad)


def _create_args(*argv: str) -> dict:  # type: ignore[type-arg]
    """``edgefleet rollout create ARGV`` through the real parser, as the body it sends."""
    from edgefleet.cli import parse_args
    from edgefleet.cli.rollouts import RolloutFlags, rollout_body

    params = parse_args(["rollout", "create", *argv])
    params["on_failure"] = params["on_failure"] and params["on_failure"].value
    lists = ("selector", "gate", "window")
    fields = {f.name for f in dataclasses.fields(RolloutFlags)}  # not --json, --override-gate
    return rollout_body(
        RolloutFlags(**{k: v or [] if k in lists else v for k, v in params.items() if k in fields})
    )


def test_shadow_and_windows_from_create_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgefleet.shared.errors import ConfigError

    body = _create_args("shapes:v2", "--stages", "1,100%", "--shadow-frames", "30",
                        "--shadow-stages", "1", "--shadow-min-match", "0.9")  # fmt: skip
    assert body["shadow"] == {"frames": 30, "timeout_s": 60.0, "min_match_rate": 0.9,
                              "stages": [1]}  # fmt: skip
    assert _create_args("shapes:v2")["shadow"] is None  # no flag: no shadow phase
    # A flag overrides the file's field; the file's other fields stay.
    path = tmp_path / "r.yaml"
    path.write_text("model: shapes\nversion: v2\nshadow: {frames: 5, timeout_s: 9}\n")
    merged = _create_args("--file", str(path), "--shadow-frames", "8")["shadow"]
    assert (merged["frames"], merged["timeout_s"]) == (8, 9.0)
    windows = _create_args("shapes:v2", "--window", "* 2 * * *", "--timezone", "Europe/Berlin")
    assert windows["maintenance_windows"] == [
        {"cron": "* 2 * * *", "timezone": "Europe/Berlin", "selector": {}}
    ]
    for argv, msg in (
        (["--shadow-stages", "3"], "shadow stages \\[3\\]: stages are numbered 1 to 1"),
        (["--shadow-stages", "one"], "bad stage numbers"),
        (["--shadow-frames", "0"], "shadow.frames"),
        (["--window", "61 * * * *"], "outside 0-59"),
        (["--timezone", "UTC"], "give --window"),
    ):
        with pytest.raises(ConfigError, match=msg):
            _create_args("shapes:v2", *argv)


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["3"], "give the window's CRON, or --clear for none"),
        (["3", "* 2 * * *", "--clear"], "give the window's CRON, or --clear for none"),
        (["3", "* 2 * * *", "--timezone", "Mars/X"], "bad window: unknown time zone 'Mars/X'"),
        (["3", "99 2 * * *"], "bad window: cron minute '99' is outside 0-59"),
        (["x", "--clear"], "bad rollout id 'x'"),
    ],
)
def test_rollout_window_checks_its_input_before_sending(
    argv: list[str], msg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgefleet.cli import main

    assert main(["rollout", "window", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgefleet: error: ") and msg in err and "Traceback" not in err

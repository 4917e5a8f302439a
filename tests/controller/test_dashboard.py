"""The dashboard in headless Chromium (Debian's ``chromium``) against a real controller with
auth on, as shipped: without a token it asks for one; with a token (kept in the tab's
sessionStorage, handed over once as #token=...) pages load, the drift charts render from
/v1/drift, clicking a rollout (its #rollout=ID link) shows its stages, the sample gallery
draws its boxes (an operator token; a viewer's gallery withholds the frames). Screenshots
stay in tmp_path; the drift page's is copied to docs/screenshots/."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from edgefleet.controller.services import Services
from edgefleet.shared.protocol import utcnow

from tests.controller.conftest import bearer, enroll_device, serving
from tests.controller.dataloop import BASE, DARK, Feeder, version_with_card

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)"),
]


def chromium(tmp_path: Path, url: str, *extra: str) -> str:
    argv = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900", "--virtual-time-budget=8000", *extra, url,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def section(dom: str, name: str) -> str:
    m = re.search(rf'<section id="{name}"[^>]*>.*?</section>', dom, re.S)
    assert m, f"no section {name}"
    return m.group(0)


@pytest.fixture
def filled(secured: Services) -> Services:
    services = secured
    version_with_card(services)
    feed = Feeder(services)
    for i, site in enumerate(("north", "north", "south")):
        feed.device(f"cam-{i}", {"site": site})
    t0 = utcnow() - timedelta(minutes=6)
    for minute in range(5):
        for i in range(3):
            dark = i == 2 and minute >= 2
            feed.window(f"cam-{i}", DARK if dark else BASE, at=t0 + timedelta(minutes=minute))
    return services


def upload_sample(client: httpx.Client, own: dict[str, str]) -> None:
    img = np.full((120, 160, 3), 70, np.uint8)
    cv2.circle(img, (50, 60), 30, (0, 0, 255), -1)
    meta = {"uid": "s1", "device_id": "cam-2", "model": "shapes", "version": "v1",
            "strategy": "uncertain", "reason": "2 score(s) in [0.1, 0.4)",
            "captured_at": utcnow().isoformat(), "width": 160, "height": 120,
            "detections": [{"class_id": 0, "class_name": "circle", "confidence": 0.31,
                            "box_xyxy": [20, 30, 80, 90]}],
            "candidates": [{"class_id": 3, "class_name": "star", "confidence": 0.12,
                            "box_xyxy": [100, 10, 150, 60]}]}  # fmt: skip
    r = client.post("/v1/samples", data={"meta": json.dumps(meta)},
                    files={"image": ("s.jpg", cv2.imencode(".jpg", img)[1].tobytes())},
                    headers={"X-Edgefleet-Device": "cam-2", **own})  # fmt: skip
    assert r.status_code == 201, r.text


def test_dashboard_pages(filled: Services, tmp_path: Path) -> None:
    with serving(filled) as client:
        base = str(client.base_url).rstrip("/")
        operator, viewer = bearer(filled, "operator"), bearer(filled, "viewer")
        upload_sample(client, enroll_device(client, operator, "cam-2", tmp_path / "cam-2"))
        spec = {"model": "shapes", "version": "v1", "stages": "1,50%,100%"}
        r = client.post("/v1/rollouts", json=spec, headers=operator)
        assert r.status_code == 200, r.text
        rollout = r.json()["id"]
        held = hold_by_window_and_pin(filled, client, operator)
        page = client.get("/ui/")
        assert page.status_code == 200 and '<script src="/ui/app.js">' in page.text
        assert client.get("/ui/../app.py").status_code == 404
        # No CDN, nothing from the internet: every asset the page names is ours.
        assert not re.search(r"(src|href)=\"https?://", page.text)

        # No token yet: the page asks for one instead of showing data.
        bare = chromium(tmp_path, f"{base}/ui/#fleet", "--dump-dom")
        assert re.search(r'<form id="login"(?! hidden)', bare) and "needs an API token" in bare
        assert 'data-ready="1"' not in section(bare, "fleet")
        link = f"#token={operator['Authorization'].split()[1]}"  # then kept in sessionStorage
        fleet = section(chromium(tmp_path, f"{base}/ui/#fleet&{link[1:]}", "--dump-dom"),
                        "fleet")  # fmt: skip
        assert 'data-ready="1"' in fleet and 'data-count="3"' in fleet
        assert "cam-2" in fleet and "site=south" in fleet
        # Desired beside reported: the canary's desired version and the rule that set it.
        assert f">rollout/{rollout}<" in fleet and "data-waiting=" in fleet
        # Why a device does not run what it should: the same words as the JSON and the CLI.
        devices = client.get("/v1/devices", headers=viewer).json()["data"]
        assert any((d["waiting"] or "").startswith("window closed (opens ") for d in devices)
        for d in devices:
            assert f'data-waiting="{html.escape(d["waiting"] or "")}"' in fleet, d

        drift = section(chromium(tmp_path, f"{base}/ui/#drift&{link[1:]}", "--dump-dom"),
                        "drift")  # fmt: skip
        assert 'data-ready="1"' in drift
        assert drift.count('class="series"') == 3  # shapes:v1, then the sites north and south
        assert 'data-group="south"' in drift and 'data-group="shapes:v1"' in drift

        detail = section(chromium(tmp_path, f"{base}/ui/#rollout={rollout}&{link[1:]}",
                                  "--dump-dom"), "rollouts")  # fmt: skip
        assert f'data-rollout="{rollout}"' in detail
        assert len(re.findall(r'class="stage [a-z]+" data-stage="\d"', detail)) == 3
        assert "stage 1: 1 (" in detail and "stage 3: 100%" in detail
        # One numbering: the dashboard's "stage N" is the API's stage_number / number.
        body = client.get(f"/v1/rollouts/{rollout}", headers=viewer).json()
        assert [s["number"] for s in body["stages"]] == [1, 2, 3]
        assert 'data-stage="1"' in detail and f"stage {body['stage_number']}: " in detail

        # A rollout that a closed window holds and a pin skips says both, as rollout status.
        detail = section(chromium(tmp_path, f"{base}/ui/#rollout={held}&{link[1:]}",
                                  "--dump-dom"), "rollouts")  # fmt: skip
        opens = client.get(f"/v1/rollouts/{held}", headers=viewer).json()["waiting_for_window"]
        assert opens and f'data-window="{opens}"' in detail
        day = "" if opens[:10] == utcnow().date().isoformat() else f"{opens[5:10]} "
        assert f"waiting for window (opens {day}{opens[11:16]} UTC)" in detail
        assert 'data-skipped="cam-0"' in detail and "skipped: pin 1 holds it to shapes:v1" in detail

        gallery = section(chromium(tmp_path, f"{base}/ui/#samples&{link[1:]}", "--dump-dom"),
                          "samples")  # fmt: skip
        assert 'data-boxes="2"' in gallery  # the image loaded and both boxes were drawn
        assert "uncertain: 2 score(s)" in gallery
        # A viewer sees the sample's metadata, not the camera frame (403).
        seen = section(
            chromium(
                tmp_path,
                f"{base}/ui/#samples&token={viewer['Authorization'].split()[1]}",
                "--dump-dom",
            ),
            "samples",
        )
        assert "uncertain: 2 score(s)" in seen and 'data-withheld="403"' in seen
        assert "data-boxes" not in seen

        for page, name in (("#drift", "drift"), (f"#rollout={rollout}", "rollout"),
                           ("#samples", "samples")):  # fmt: skip
            shot = tmp_path / f"{name}.png"
            chromium(tmp_path, f"{base}/ui/{page}&{link[1:]}", f"--screenshot={shot}")
            assert shot.stat().st_size > 5000
            keep(shot, DOCS / f"dashboard-{name}.png")


def hold_by_window_and_pin(
    services: Services, client: httpx.Client, operator: dict[str, str]
) -> int:
    """A second rollout (v2): a pin holds cam-0 on v1 (rollout 1 has cam-1), a window
    closed for 12 more hours holds the others."""
    version_with_card(services, version="v2")
    pin = {"selector": {"device_id": "cam-0"}, "model": "shapes", "version": "v1"}
    assert client.post("/v1/pins", json=pin, headers=operator).status_code == 200
    closed = (utcnow().hour + 12) % 24
    body = {"model": "shapes", "version": "v2",
            "maintenance_windows": [{"cron": f"* {closed} * * *"}]}  # fmt: skip
    r = client.post("/v1/rollouts", json=body, headers=operator)
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


def keep(shot: Path, dest: Path) -> None:
    """docs/screenshots/ gets a copy when it has none (or when asked to refresh them), so a
    test run does not leave the working tree changed."""
    if dest.exists() and not os.environ.get("EDGEFLEET_UPDATE_SCREENSHOTS"):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, dest)

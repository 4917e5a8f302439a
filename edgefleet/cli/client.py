"""The CLI's one HTTP client of the controller: $EDGEFLEET_URL with $EDGEFLEET_TOKEN, a
typed method per endpoint the CLI uses, and every failure one EdgefleetError line (an
unreachable controller, a bad URL, or the controller's own ``detail``)."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx

from edgefleet.shared.errors import ConfigError, EdgefleetError, TransportError

DEFAULT_URL = "http://127.0.0.1:8600"
TIMEOUT = httpx.Timeout(30.0, read=600.0)  # seconds; signing a large upload takes a while
ACTOR_HEADER = "X-Edgefleet-Actor"
IMAGE_METADATA = "/tuf/image/metadata"

Json = dict[str, Any]
Files = dict[str, tuple[str, Any, str]]


def controller_url() -> str:
    return os.environ.get("EDGEFLEET_URL", DEFAULT_URL).rstrip("/")


def os_user() -> str:
    """Who acts, for the audit log when the controller runs without tokens (with them,
    the audit log names the token instead)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def error_line(response: httpx.Response) -> str:
    """The controller's ``detail`` on one line, else the HTTP status."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = f"{response.status_code} {response.reason_phrase}"
    return " ".join(detail.split())


class CountingReader:
    """A file httpx uploads from, reporting each chunk it reads to ``on_read``."""

    def __init__(self, f: BinaryIO, on_read: Callable[[int], None]) -> None:
        self._f, self._on_read = f, on_read

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._on_read(len(chunk))
        return chunk

    def __getattr__(self, name: str) -> Any:  # fileno, seek, tell: httpx sizes the upload
        return getattr(self._f, name)


class ControllerClient:
    """``with ControllerClient.from_env() as api: api.devices()``."""

    def __init__(self, url: str, token: str = "", actor: str = "unknown") -> None:
        headers = {ACTOR_HEADER: actor}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url
        try:
            self._http = httpx.Client(base_url=url, timeout=TIMEOUT, headers=headers)
        except httpx.InvalidURL as e:
            raise ConfigError(f"bad EDGEFLEET_URL {url!r}: {e}") from e

    @classmethod
    def from_env(cls) -> ControllerClient:
        token = os.environ.get("EDGEFLEET_TOKEN", "").strip()
        return cls(controller_url(), token, os_user())

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    # --- the one place requests are sent -----------------------------------------------

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise TransportError(
                f"cannot reach the controller at {self.url}: {e or type(e).__name__}"
            ) from e
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            raise ConfigError(f"bad EDGEFLEET_URL {self.url!r}: {e}") from e

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; an error answer is one EdgefleetError line."""
        response = self.send(method, path, **kwargs)
        if not response.is_success:
            raise EdgefleetError(error_line(response))
        return response.json()

    def _data(self, path: str, params: dict[str, Any] | None = None) -> list[Json]:
        answer: list[Json] = self.call("GET", path, params=params or {})["data"]
        return answer

    def _optional(self, path: str) -> Json | None:
        """GET ``path``; None when the controller answers 404 (no card, no lineage)."""
        response = self.send("GET", path)
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise EdgefleetError(error_line(response))
        answer: Json = response.json()
        return answer

    def _bytes(self, path: str) -> bytes:
        response = self.send("GET", path)
        if not response.is_success:
            raise EdgefleetError(error_line(response))
        return response.content

    # --- models ------------------------------------------------------------------------

    def models(self) -> list[Json]:
        return self._data("/v1/models")

    def versions(self, name: str) -> list[Json]:
        return self._data(f"/v1/models/{name}/versions")

    def next_release(self, name: str) -> Json:
        answer: Json = self.call("GET", f"/v1/models/{name}/next-release")
        return answer

    def push_version(self, name: str, files: Files, version: str | None) -> Json:
        data = {"version": version} if version else {}
        answer: Json = self.call("POST", f"/v1/models/{name}/versions", files=files, data=data)
        return answer

    def push_signed(self, name: str, files: Files, version: str) -> Json:
        answer: Json = self.call(
            "POST", f"/v1/models/{name}/signed", files=files, data={"version": version}
        )
        return answer

    def image_metadata(self, filename: str) -> bytes:
        return self._bytes(f"{IMAGE_METADATA}/{filename}")

    def put_card(self, name: str, version: str, card: Json) -> Json:
        answer: Json = self.call("PUT", f"/v1/models/{name}/versions/{version}/card", json=card)
        return answer

    def card(self, name: str, version: str) -> Json | None:
        return self._optional(f"/v1/models/{name}/versions/{version}/card")

    def lineage(self, name: str, version: str) -> Json | None:
        """The version's lineage; None when it was pushed without one."""
        answer = self._optional(f"/v1/models/{name}/versions/{version}/lineage")
        return None if answer is None else answer["lineage"]

    def lineage_answer(self, name: str, version: str) -> Json:
        """The version's lineage with its digest (``lineage``, ``sha256``, ...); the
        controller's 404 is the error."""
        answer: Json = self.call("GET", f"/v1/models/{name}/versions/{version}/lineage")
        return answer

    def required_lineage(self, name: str, version: str) -> Json:
        """The version's lineage; the controller's 404 is the error."""
        return dict(self.lineage_answer(name, version)["lineage"])

    def set_stage(self, name: str, version: str, stage: str) -> Json:
        body = {"stage": stage}
        answer: Json = self.call("PUT", f"/v1/models/{name}/versions/{version}/stage", json=body)
        return answer

    def download_model(self, name: str, version: str, sha256: str, dest: Path) -> None:
        """The version's ONNX as the controller serves it to devices (by its digest)."""
        url = f"/tuf/image/targets/models/{name}/{version}/{sha256}.model.onnx"
        try:
            with self._http.stream("GET", url) as answer:
                if not answer.is_success:
                    answer.read()
                    raise EdgefleetError(error_line(answer))
                with dest.open("wb") as f:
                    for chunk in answer.iter_bytes():
                        f.write(chunk)
        except httpx.TransportError as e:
            raise TransportError(f"cannot reach the controller at {self.url}: {e}") from e

    # --- the validation gate -----------------------------------------------------------

    def datasets(self) -> list[Json]:
        return self._data("/v1/datasets")

    def add_dataset(self, name: str, archive: Path, on_read: Callable[[int], None]) -> Json:
        with archive.open("rb") as f:
            files = {"file": ("dataset.tar", CountingReader(f, on_read), "application/x-tar")}
            answer: Json = self.call("POST", f"/v1/datasets/{name}", files=files)
        return answer

    def policy(self, name: str) -> Json | None:
        """The model's validation policy; None when it has none."""
        return self._optional(f"/v1/models/{name}/policy")

    def set_policy(self, name: str, body: Json) -> Json:
        answer: Json = self.call("PUT", f"/v1/models/{name}/policy", json=body)
        return answer

    # --- TensorRT plans ----------------------------------------------------------------

    def plans(self, params: dict[str, str]) -> list[Json]:
        return self._data("/v1/plans", params)

    def push_plan(self, name: str, version: str, path: Path, fields: dict[str, str]) -> Json:
        with path.open("rb") as f:
            files = {"file": (path.name, f, "application/octet-stream")}
            answer: Json = self.call(
                "POST", f"/v1/models/{name}/versions/{version}/plans", data=fields, files=files
            )
        return answer

    def approve_plan(self, plan_id: str) -> Json:
        answer: Json = self.call("POST", f"/v1/plans/{plan_id}/approve")
        return answer

    # --- devices -----------------------------------------------------------------------

    def devices(self) -> list[Json]:
        return self._data("/v1/devices")

    def refresh_device(self, device_id: str) -> Json:
        answer: Json = self.call("POST", f"/v1/devices/{device_id}/refresh")
        return answer

    def revoke_device(self, device_id: str) -> Json:
        answer: Json = self.call("POST", f"/v1/devices/{device_id}/revoke")
        return answer

    def enroll_token(self, device_id: str, ttl_s: int) -> Json:
        body = {"device_id": device_id, "ttl_s": ttl_s}
        answer: Json = self.call("POST", "/v1/enroll-tokens", json=body)
        return answer

    # --- rollouts ----------------------------------------------------------------------

    def rollouts(self) -> list[Json]:
        return self._data("/v1/rollouts")

    def rollout(self, rollout_id: str) -> Json:
        answer: Json = self.call("GET", f"/v1/rollouts/{rollout_id}")
        return answer

    def create_rollout(self, spec: Json, *, override_gate: bool = False) -> Json:
        """``override_gate``: roll out a version the validation gate rejected (admin)."""
        params = {"override_gate": "true"} if override_gate else {}
        answer: Json = self.call("POST", "/v1/rollouts", json=spec, params=params)
        return answer

    def act_on_rollout(self, rollout_id: str, action: str) -> Json:
        answer: Json = self.call("POST", f"/v1/rollouts/{rollout_id}/{action}")
        return answer

    def set_windows(self, rollout_id: str, windows: list[Json]) -> Json:
        body = {"maintenance_windows": windows}
        answer: Json = self.call("PUT", f"/v1/rollouts/{rollout_id}/windows", json=body)
        return answer

    # --- pins and channels -------------------------------------------------------------

    def pins(self) -> list[Json]:
        return self._data("/v1/pins")

    def create_pin(self, body: Json) -> Json:
        answer: Json = self.call("POST", "/v1/pins", json=body)
        return answer

    def delete_pin(self, pin_id: str) -> None:
        self.call("DELETE", f"/v1/pins/{pin_id}")

    def channels(self) -> list[Json]:
        return self._data("/v1/channels")

    def set_channel(
        self, name: str, model: str, version: str | None, stage: str | None = None
    ) -> Json:
        body = {"model": model, "version": version, "stage": stage}
        answer: Json = self.call("PUT", f"/v1/channels/{name}", json=body)
        return answer

    def delete_channel(self, name: str) -> None:
        self.call("DELETE", f"/v1/channels/{name}")

    # --- the data loop -----------------------------------------------------------------

    def alerts(self, state: str | None) -> list[Json]:
        return self._data("/v1/alerts", {"state": state} if state else {})

    def samples(self, params: dict[str, Any]) -> Json:
        answer: Json = self.call("GET", "/v1/samples", params=params)
        return answer

    def sample_image(self, sample_id: int) -> bytes:
        return self._bytes(f"/v1/samples/{sample_id}/image")

    def sampling_rules(self) -> list[Json]:
        return self._data("/v1/sampling")

    def set_sampling(self, selector: dict[str, str], settings: Json) -> Json:
        body = {"selector": selector, "settings": settings}
        answer: Json = self.call("PUT", "/v1/sampling", json=body)
        return answer

    def delete_sampling(self, selector: str) -> None:
        self.call("DELETE", "/v1/sampling", params={"selector": selector})

    # --- tokens and the audit log ------------------------------------------------------

    def tokens(self) -> list[Json]:
        return self._data("/v1/tokens")

    def create_token(self, role: str, name: str | None) -> Json:
        answer: Json = self.call("POST", "/v1/tokens", json={"role": role, "name": name})
        return answer

    def revoke_token(self, name: str) -> Json:
        answer: Json = self.call("POST", f"/v1/tokens/{name}/revoke")
        return answer

    def audit(self, target: str | None, limit: int) -> list[Json]:
        params: dict[str, Any] = {"limit": limit}
        if target:
            params["target"] = target
        return self._data("/v1/audit", params)

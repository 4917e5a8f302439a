"""The agent's YAML config, validated once at start.

Relative paths (``data_dir``, ``source.path``) are taken from the folder of the config
file, so a config and its data can move together. Any problem becomes one
:class:`ConfigError` line naming the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from edgefleet.shared.errors import ConfigError, ProtocolError
from edgefleet.shared.sampling import SamplingConfig
from edgefleet.shared.topics import validate_device_id
from edgefleet.shared.yaml_file import read_yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_MQTT_PORT = 1883
DEFAULT_MQTTS_PORT = 8883


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # folder / video: a path; camera: a device index ("0") or /dev/videoN; rtsp: rtsp://...
    kind: Literal["folder", "video", "camera", "rtsp"]
    path: str
    fps: float = Field(default=10.0, ge=0, le=1000)  # frames per second; 0 = as fast as possible
    loop: bool = True


class JsonLinesSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["jsonl"]
    path: Path  # one JSON object per frame, appended
    max_queue: int = Field(default=256, ge=1)  # results; more are dropped and counted


class WebhookSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["webhook"]
    url: str  # http(s)://..., one POST per frame
    timeout_s: float = Field(default=5.0, gt=0)  # seconds per POST
    max_queue: int = Field(default=256, ge=1)


class MqttSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1883"  # usually a broker on the device itself
    topic: str
    qos: int = Field(default=0, ge=0, le=1)
    max_queue: int = Field(default=256, ge=1)


SinkConfig = Annotated[
    JsonLinesSinkConfig | WebhookSinkConfig | MqttSinkConfig, Field(discriminator="kind")
]


class ShadowConfig(BaseModel):
    """Run the challenger beside the champion on sampled live frames before the swap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(default=20, ge=1)  # sampled frames compared
    every: int = Field(default=1, ge=1)  # sample one live frame in this many
    timeout_s: float = Field(default=60.0, gt=0)  # seconds to wait for the sampled frames
    min_match_rate: float | None = Field(default=None, ge=0, le=1)  # gate; None: report only


class CacheConfig(BaseModel):
    """Model store quota; the current and the previous model are kept whatever it says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_artifacts: int = Field(default=2, ge=2)  # verified model files kept on disk
    max_bytes: int | None = Field(default=None, gt=0)  # bytes for all of them together


class TlsConfig(BaseModel):
    """mTLS to the broker (``mqtts://``): files from enrollment, relative to the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: Path  # PEM: the device CA; the broker's certificate must chain to it
    cert: Path  # PEM: this device's certificate (CN = device id)
    key: Path  # PEM: its private key


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str
    labels: dict[str, str] = Field(default_factory=dict)
    controller_url: str
    mqtt_url: str  # mqtt://host:port, or mqtts://host:port with ``tls``
    tls: TlsConfig | None = None  # required by mqtts://
    data_dir: Path
    source: SourceConfig
    # seconds between director polls while the broker is away (hints cannot arrive)
    poll_interval_s: float = Field(default=30.0, gt=0, le=86400)
    # seconds between polls while MQTT is up: hints arrive retained on a persistent session,
    # so the poll is only a safety net; None polls every poll_interval_s regardless
    connected_poll_interval_s: float | None = Field(default=300.0, gt=0, le=86400)
    # Offer TensorRT engines built here to the controller (an operator approves each).
    share_built_plans: bool = True
    telemetry_window_s: float = Field(default=60.0, gt=0, le=86400)  # seconds per telemetry window
    conf: float = Field(default=0.25, ge=0, le=1)
    iou: float = Field(default=0.7, ge=0, le=1)
    low_confidence: float = Field(default=0.5, ge=0, le=1)  # below this a detection is "low"
    health_check_frames: int = Field(default=5, ge=1, le=100_000)  # frames judged after a swap
    # per frame, during the health check
    latency_budget_ms: float = Field(default=1000.0, gt=0, le=600_000)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    shadow: ShadowConfig | None = None  # None: swap without a shadow phase
    sinks: list[SinkConfig] = Field(default_factory=list)  # where detections also go
    metrics_port: int | None = Field(default=None, ge=0, le=65535)  # Prometheus /metrics
    metrics_addr: str = "127.0.0.1"  # listen address of /metrics; 0.0.0.0 for a remote scraper
    profile: str | None = None  # firmware profile name; None: chosen from the fingerprint
    profiles_dir: Path | None = None  # firmware_profiles/; None: the one shipped beside us
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)  # frames sent back
    telemetry_spool_max: int = Field(default=1000, ge=1, le=10_000_000)  # windows, offline

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str) -> str:
        try:
            validate_device_id(v)
        except ProtocolError as e:
            raise ValueError(e.reason) from e
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host:port or mqtts://host:port")
        _ = parts.port  # raises ValueError on a bad port
        return v

    @field_validator("controller_url")
    @classmethod
    def _controller_url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("expected http(s)://host[:port]")
        return v.rstrip("/")

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        parts = urlsplit(self.mqtt_url)
        return parts.port or (DEFAULT_MQTTS_PORT if parts.scheme == "mqtts" else DEFAULT_MQTT_PORT)

    @model_validator(mode="after")
    def _tls_for_mqtts(self) -> AgentConfig:
        if urlsplit(self.mqtt_url).scheme == "mqtts" and self.tls is None:
            raise ValueError("mqtts:// needs tls: {ca, cert, key}")
        return self


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    return f"{where}: {err['msg']}"


def _anchor_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(raw)
    if isinstance(out.get("data_dir"), str):
        out["data_dir"] = str(base / Path(out["data_dir"]).expanduser())
    if isinstance(out.get("profiles_dir"), str):
        out["profiles_dir"] = str(base / Path(out["profiles_dir"]).expanduser())
    sinks = out.get("sinks")
    if isinstance(sinks, list):
        out["sinks"] = [
            {**s, "path": str(base / Path(s["path"]).expanduser())}
            if isinstance(s, dict) and isinstance(s.get("path"), str)
            else s
            for s in sinks
        ]
    tls = out.get("tls")
    if isinstance(tls, dict):
        out["tls"] = {
            k: str(base / Path(v).expanduser()) if isinstance(v, str) else v for k, v in tls.items()
        }
    source = out.get("source")
    if (
        isinstance(source, dict)
        and source.get("kind") in ("folder", "video")
        and isinstance(source.get("path"), str)
    ):
        out["source"] = {**source, "path": str(base / Path(source["path"]).expanduser())}
    return out


def parse_config(raw: object, *, base: Path, origin: str = "config") -> AgentConfig:
    """Validate an already-loaded mapping; relative paths are anchored at ``base``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    try:
        return AgentConfig.model_validate(_anchor_paths(raw, base))
    except ValidationError as e:
        raise ConfigError(f"{origin}: {_first_error(e)}") from e


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the agent config, or raise one-line :class:`ConfigError`."""
    p = Path(path)
    raw = read_yaml(p)
    return parse_config(raw, base=p.resolve().parent, origin=str(p))


def prepare_data_dir(path: Path) -> None:
    """Create the data folder and prove it takes a durable write, or one ConfigError line.

    Checked before any thread starts: a folder that is a file, read-only or on /proc would
    otherwise fail deep inside the store or the spool, with a traceback.
    """
    probe = path / ".edgefleet-write-check"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data_dir {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"data_dir {path} is not a writable folder: {e.strerror or e}") from e

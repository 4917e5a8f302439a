"""Controller settings.

:class:`ServeConfig` (pydantic-settings) is where every setting of ``controller serve``
comes from, in this order, the first that has it winning: a command-line flag, an
``EDGEFLEET_*`` environment variable, the YAML settings file (``--config FILE`` or
``EDGEFLEET_CONFIG``), the default. It validates them all and builds the frozen
:class:`Settings` the service is handed; nothing else in the controller reads the
environment for its settings. Tests build :class:`Settings` directly.
docs/SETTINGS.md lists each setting (generated from :class:`ServeConfig`'s fields).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from edgefleet.shared.errors import ConfigError, EdgefleetError
from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_MQTT_PORT = 1883


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]``; anything else is a ConfigError."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"bad MQTT URL {url!r}: {e}") from e
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"bad MQTT URL {url!r}: expected mqtt://HOST:PORT")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else DEFAULT_MQTT_PORT), tls)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad --listen {value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8600
    database_url: str | None = None  # SQLAlchemy URL; None -> SQLite in data_dir
    mqtt_client_id: str | None = None  # None -> stable id derived from data_dir
    replica: str | None = None  # broker identity edgefleet-controller-<replica> (mqtts://)
    mqtt_keepalive: int = 30  # seconds
    # seconds the broker keeps our session and its queue while we are away: a week, like
    # deploy/mosquitto's persistent_client_expiration, so an outage of the controller
    # itself queues telemetry (up to the queue limits) instead of dropping it
    mqtt_session_expiry: int = 7 * 24 * 3600
    telemetry_max_age_days: float = 7.0  # raw windows kept; older ones become hourly sums
    online_refresh_interval: float = 6 * 3600.0  # seconds between timestamp/snapshot refreshes
    max_upload_bytes: int = 4 * 1024**3  # bytes
    auth: bool = False  # True: every route but /healthz needs a token (controller/tokens.py)
    public_mirror: bool = False  # True: /tuf/image (metadata, artifacts) served to anyone
    # Concurrency (see deploy/README.md, "Serving a fleet"). Requests run on api_threads
    # threads; the database pool has a connection for each of them plus the background
    # threads (scheduler, ingest, alerts, caches), so no thread ever waits on another for one.
    api_threads: int = 40  # the request threadpool (anyio's default is 40 too)
    background_db_connections: int = 16  # pool connections beyond api_threads
    max_downloads: int = 256  # artifact downloads sent at once; more get 503 + Retry-After
    download_retry_after: int = 10  # seconds, the Retry-After of that 503
    offload_prefix: str | None = None  # e.g. "/_edgefleet_data": nginx sends files (X-Accel)
    artifact_store: str | None = None  # None: DATA/artifacts; else s3://BUCKET/PREFIX?...
    tuf_store: str = "folder"  # "folder": DATA/tuf; "database": rows (replicas share them)
    shutdown_grace: float = 3.0  # seconds SIGTERM lets open responses finish
    shutdown_deadline: float = 7.0  # seconds after SIGTERM the process is gone, in any state

    @classmethod
    def from_flags(cls, flags: Mapping[str, object]) -> Settings:
        """``flags`` (serve's, by name), then ``EDGEFLEET_*``, then the settings file, then
        defaults."""
        return ServeConfig.load(flags).settings()

    @property
    def broker(self) -> BrokerAddress:
        return BrokerAddress.parse(self.mqtt_url)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'edgefleet.db'}"

    @property
    def db_pool_size(self) -> int:
        return self.api_threads + self.background_db_connections

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def client_id(self) -> str:
        # Stable per data folder and listen address, so the broker keeps our persistent
        # session across restarts, and two replicas sharing a data folder (each on its own
        # address) do not take each other's session over.
        if self.mqtt_client_id:
            return self.mqtt_client_id
        if self.replica:  # over mTLS the broker forces the client id to the CN anyway
            return f"edgefleet-controller-{self.replica}"
        where = f"{self.data_dir}|{self.listen_host}:{self.listen_port}"
        digest = hashlib.sha256(where.encode()).hexdigest()[:10]
        return f"edgefleet-controller-{digest}"

    @property
    def mqtt_tls_files(self) -> tuple[Path, Path, Path] | None:
        """(CA, cert, key) of the controller's mTLS identity for ``mqtts://`` (``pki init``)."""
        if not self.broker.tls:
            return None
        pki = self.data_dir / "pki"
        stem = f"controller-{self.replica}" if self.replica else "controller"
        files = (pki / "device-ca.pem", pki / f"{stem}.pem", pki / f"{stem}.key")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ConfigError(
                f"mqtts:// needs the controller's certificate: run `edgefleet pki "
                f"{'replica' if self.replica else 'init'} --data {self.data_dir}"
                f"{' ' + self.replica if self.replica else ''}` (missing {missing[0]})"
            )
        return files


# --- where the settings come from ------------------------------------------------------

ENV_PREFIX = "EDGEFLEET_"
# ServeConfig's fields that `controller serve` also takes as a flag (--data, --max-downloads):
# edgefleet/cli/controller.py spells each as its field name with dashes.
FLAGS = ("config", "data", "mqtt", "listen", "replica", "database_url", "insecure_dev",
         "public_mirror", "max_downloads", "offload_prefix", "artifact_store", "tuf_store",
         "telemetry_max_age_days")  # fmt: skip


def _env_config() -> Path | None:
    value = os.environ.get(f"{ENV_PREFIX}CONFIG", "").strip()
    return Path(value) if value else None


def read_settings_file(path: Path) -> dict[str, Any]:
    """The YAML settings file: a mapping of ServeConfig field names to values."""
    try:
        values = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the settings file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"settings file {path} is not valid YAML{where}") from e
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"settings file {path}: expected a mapping of setting: value")
    return values


class _SettingsFile(PydanticBaseSettingsSource):
    """The YAML file named by --config (an init value) or EDGEFLEET_CONFIG."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.values = read_settings_file(path) if path else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class ServeConfig(BaseSettings):
    """Every setting of ``controller serve``: flag > ``EDGEFLEET_*`` > settings file > default.

    Each field's description is its line in docs/SETTINGS.md.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    config: Path | None = Field(None, description="YAML settings file (keys: the names below)")
    data: Path | None = Field(None, description="data folder (SQLite, artifacts, TUF); required")
    mqtt: str = Field(Settings.mqtt_url, description="broker URL, mqtt:// or mqtts://")
    listen: str = Field("127.0.0.1:8600", description="HOST:PORT the API listens on")
    replica: str | None = Field(
        None, description="connect to an mqtts:// broker as replica NAME (`pki replica`)"
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL (default: SQLite in data)")
    insecure_dev: bool = Field(
        False, description="no API tokens, loopback only (demo, tests); never for a fleet"
    )
    public_mirror: bool = Field(
        False, description="serve /tuf/image (metadata and models) without credentials"
    )
    max_downloads: int = Field(
        Settings.max_downloads, ge=1, description="artifact downloads sent at once; more get 503"
    )
    offload_prefix: str | None = Field(
        None, description="X-Accel-Redirect prefix for a reverse proxy (deploy/nginx/)"
    )
    artifact_store: str | None = Field(
        None,
        description="where artifacts live: s3://BUCKET/PREFIX[?endpoint=URL&presign=SECONDS] "
        "(credentials from AWS_* env), file:///PATH; default DATA/artifacts",
    )
    tuf_store: Literal["folder", "database"] = Field(
        "folder",
        description="where TUF metadata lives and what serialises signing: files under "
        "DATA/tuf, or the database (replicas on one database need no shared folder)",
    )
    telemetry_max_age_days: float = Field(
        Settings.telemetry_max_age_days, gt=0,
        description="days raw telemetry windows are kept, then summed per device and hour",
    )  # fmt: skip
    mqtt_client_id: str | None = Field(
        None, description="MQTT client id (default: stable, from data folder and address)"
    )
    mqtt_keepalive: int = Field(
        Settings.mqtt_keepalive, ge=1, description="MQTT keepalive, seconds"
    )
    mqtt_session_expiry: int = Field(
        Settings.mqtt_session_expiry, ge=0,
        description="seconds the broker keeps our session and queue while we are away",
    )  # fmt: skip
    online_refresh_interval: float = Field(
        Settings.online_refresh_interval, gt=0,
        description="seconds between re-signing the online TUF roles (timestamp, snapshot)",
    )  # fmt: skip
    max_upload_bytes: int = Field(
        Settings.max_upload_bytes, ge=1, description="largest upload, bytes"
    )
    api_threads: int = Field(Settings.api_threads, ge=1, description="request threadpool size")
    background_db_connections: int = Field(
        Settings.background_db_connections, ge=1,
        description="database connections beyond api_threads (scheduler, ingest, alerts)",
    )  # fmt: skip
    download_retry_after: int = Field(
        Settings.download_retry_after, ge=1, description="Retry-After of a busy 503, seconds"
    )
    shutdown_grace: float = Field(
        Settings.shutdown_grace, ge=0, description="seconds SIGTERM lets open responses finish"
    )
    shutdown_deadline: float = Field(
        Settings.shutdown_deadline, gt=0, description="seconds after SIGTERM the process is gone"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        flags = getattr(init_settings, "init_kwargs", {})
        path = flags.get("config") or _env_config()
        return init_settings, env_settings, _SettingsFile(settings_cls, path)

    @field_validator("mqtt")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        try:
            BrokerAddress.parse(value)
        except ConfigError as e:  # pydantic reports ValueErrors, with where the value came from
            raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]") from e
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        try:
            parse_listen(value)
        except ConfigError as e:
            raise ValueError("expected HOST:PORT") from e
        return value

    @field_validator("replica")
    @classmethod
    def _replica(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from edgefleet.shared.topics import validate_device_id

        try:
            return str(validate_device_id(value))
        except EdgefleetError as e:
            raise ValueError("expected a plain name: letters, digits, . _ -") from e

    @field_validator("offload_prefix")
    @classmethod
    def _offload_prefix(cls, value: str | None) -> str | None:
        if value and (not value.startswith("/") or any(c in value for c in "?#\r\n ")):
            raise ValueError("expected a path such as /_edgefleet")
        return value or None

    @classmethod
    def load(cls, given: Mapping[str, object] | None = None) -> ServeConfig:
        """The flags ``given`` by name (None and False are "not given"), over the
        environment, over the settings file. A bad value is one ConfigError line naming
        where it came from."""
        values = {name: (given or {}).get(name) for name in FLAGS}
        # "is", not "in (None, False)": --max-downloads 0 is given (and refused), since 0 == False
        flags: dict[str, Any] = {
            k: v for k, v in values.items() if v is not None and v is not False
        }
        try:
            return cls(**flags)
        except ValidationError as e:
            raise ConfigError(_one_line(e, flags)) from e

    def settings(self) -> Settings:
        if self.data is None:
            raise ConfigError(
                f"no data folder: give --data DIR, {ENV_PREFIX}DATA or data: in the settings file"
            )
        host, port = parse_listen(self.listen)
        if self.insecure_dev and not is_loopback(host):
            raise ConfigError(
                f"--insecure-dev serves without API tokens, so it listens on loopback only; "
                f"{host} is not (use --listen 127.0.0.1:{port}, or drop --insecure-dev)"
            )
        return Settings(
            data_dir=self.data.expanduser().resolve(),
            mqtt_url=self.mqtt,
            listen_host=host,
            listen_port=port,
            database_url=self.database_url,
            mqtt_client_id=self.mqtt_client_id,
            replica=self.replica,
            mqtt_keepalive=self.mqtt_keepalive,
            mqtt_session_expiry=self.mqtt_session_expiry,
            telemetry_max_age_days=self.telemetry_max_age_days,
            online_refresh_interval=self.online_refresh_interval,
            max_upload_bytes=self.max_upload_bytes,
            auth=not self.insecure_dev,  # secure by default: tokens unless --insecure-dev
            public_mirror=self.public_mirror,
            api_threads=self.api_threads,
            background_db_connections=self.background_db_connections,
            max_downloads=self.max_downloads,
            download_retry_after=self.download_retry_after,
            offload_prefix=self.offload_prefix,
            artifact_store=self.artifact_store,
            tuf_store=self.tuf_store,
            shutdown_grace=self.shutdown_grace,
            shutdown_deadline=self.shutdown_deadline,
        )


def origin(name: str, flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str:
    """Where setting ``name``'s value came from, as the user would write it."""
    if name in flags:
        return "--" + name.replace("_", "-")
    env = f"{ENV_PREFIX}{name.upper()}"
    if any(k.upper() == env for k in environ):
        return env
    path = flags.get("config") or _env_config()
    return f"{name} in {path}" if path else name


def _one_line(error: ValidationError, flags: Mapping[str, Any]) -> str:
    first = error.errors(include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else "settings"
    if first["type"] == "extra_forbidden":
        return f"unknown setting {name!r} in {flags.get('config') or _env_config()}"
    reason = str(first["msg"]).removeprefix("Value error, ")
    more = error.error_count() - 1
    tail = f" (and {more} more)" if more else ""
    return f"bad {origin(name, flags)} {first['input']!r}: {reason}{tail}"


def settings_table() -> str:
    """docs/SETTINGS.md's table: each ServeConfig field, its flag, variable and default."""
    rows = ["| Setting | Flag | Environment | Default | Meaning |", "|---|---|---|---|---|"]
    for name, field in ServeConfig.model_fields.items():
        flag = f"`--{name.replace('_', '-')}`" if name in FLAGS else ""
        default = field.default
        default = "" if default is None else f"`{str(default).lower()}`"
        rows.append(f"| `{name}` | {flag} | `{ENV_PREFIX}{name.upper()}` | {default} "
                    f"| {field.description} |")  # fmt: skip
    return "\n".join(rows)

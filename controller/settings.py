"""Controller settings: a plain dataclass built in ``main()`` from the command line.

Nothing here reads the environment; :func:`Settings.from_args` is the only constructor
the service uses, and tests build :class:`Settings` directly.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgefleet.shared.errors import ConfigError, EdgefleetError

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


def _replica(name: str | None) -> str | None:
    """``--replica NAME``: a plain name (it names a certificate file and a broker user)."""
    if name is None:
        return None
    from edgefleet.shared.topics import validate_device_id

    try:
        return validate_device_id(name)
    except EdgefleetError as e:
        raise ConfigError(f"--replica {name!r}: {e.reason}") from e


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


def _max_downloads(value: int | None) -> int:
    if value is None:
        return Settings.max_downloads
    if value < 1:
        raise ConfigError(f"bad --max-downloads {value}: expected at least 1")
    return value


def _offload_prefix(value: str | None) -> str | None:
    if value and (not value.startswith("/") or any(c in value for c in "?#\r\n ")):
        raise ConfigError(f"bad --offload-prefix {value!r}: expected a path such as /_edgefleet")
    return value or None


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
    shutdown_grace: float = 3.0  # seconds SIGTERM lets open responses finish
    shutdown_deadline: float = 7.0  # seconds after SIGTERM the process is gone, in any state

    @classmethod
    def from_args(cls, args: Any) -> Settings:
        host, port = parse_listen(args.listen)
        BrokerAddress.parse(args.mqtt)  # fail early on a bad URL
        insecure = bool(getattr(args, "insecure_dev", False))
        if insecure and not is_loopback(host):
            raise ConfigError(
                f"--insecure-dev serves without API tokens, so it listens on loopback only; "
                f"{host} is not (use --listen 127.0.0.1:{port}, or drop --insecure-dev)"
            )
        return cls(
            data_dir=Path(args.data).expanduser().resolve(),
            mqtt_url=args.mqtt,
            replica=_replica(getattr(args, "replica", None)),
            listen_host=host,
            listen_port=port,
            database_url=args.database_url,
            auth=not insecure,  # secure by default: tokens unless --insecure-dev
            public_mirror=bool(getattr(args, "public_mirror", False)),
            max_downloads=_max_downloads(getattr(args, "max_downloads", None)),
            offload_prefix=_offload_prefix(getattr(args, "offload_prefix", None)),
            artifact_store=getattr(args, "artifact_store", None),
            telemetry_max_age_days=_positive_days(getattr(args, "telemetry_max_age_days", 7.0)),
        )

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


def _positive_days(value: float) -> float:
    if not value > 0:
        raise ConfigError(f"--telemetry-max-age-days must be more than 0, not {value}")
    return float(value)

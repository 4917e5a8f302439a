"""``edgefleet pki ...``: the device PKI of a controller data folder (controller/pki.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgefleet.cli.base import group
from edgefleet.shared.errors import ConfigError

if TYPE_CHECKING:
    from edgefleet.controller.pki import DevicePki

app = group("device CA, broker and controller certificates")

DataDir = Annotated[Path, typer.Option("--data", help="controller data folder")]
DeviceId = Annotated[str, typer.Argument(metavar="DEVICE_ID", help="the device's id")]
DEVICE_WARN = timedelta(days=90)  # agents renew with ~122 of 365 days left: less is a failure


def _pki(data: Path) -> DevicePki:
    from edgefleet.controller.pki import DevicePki

    return DevicePki(data / "pki")


def _existing_pki(data: Path) -> DevicePki:
    pki = _pki(data)
    if not pki.exists():
        raise ConfigError(f"no device CA in {pki.folder}: run `edgefleet pki init`")
    return pki


@app.command("init")
def init(
    data: DataDir,
    broker_name: Annotated[list[str] | None, typer.Option(
        "--broker-name",
        help="host name or IP the broker certificate names (repeat; default localhost)",
    )] = None,
    broker_user: Annotated[str | None, typer.Option(
        "--broker-user", metavar="USER[:GROUP]",
        help="also write the broker's files (CA, server cert and key, CRL) to --broker-dir, "
        "owned by USER (Mosquitto: mosquitto), key 0440, folder 0750",
    )] = None,
    broker_dir: Annotated[Path, typer.Option(
        "--broker-dir",
        help="where --broker-user's files go (deploy/mosquitto/mosquitto.conf reads them)",
    )] = Path("/etc/edgefleet/pki"),
) -> None:  # fmt: skip
    """Create DATA/pki: device CA, broker, controller, CRL."""
    from edgefleet.controller.pki import export_broker_files, owner_ids

    pki = _pki(data)
    owner = owner_ids(broker_user) if broker_user else None  # before writing
    pki.init(tuple(broker_name or ("localhost", "127.0.0.1")))
    print(f"device CA, broker and controller certificates in {pki.folder}")
    if owner is not None:
        export_broker_files(pki, broker_dir, owner)
        print(f"the broker's CA, certificate, key and CRL in {broker_dir} for {broker_user}")


@app.command("replica")
def replica(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="replica name: CN edgefleet-controller-NAME")],
    data: DataDir,
    acl: Annotated[Path | None, typer.Option(
        "--acl", metavar="FILE", help="also give the replica the controller's rights in this "
        "broker ACL (/etc/mosquitto/edgefleet.acl)")] = None,
) -> None:  # fmt: skip
    """A controller replica's own broker certificate."""
    from edgefleet.controller.pki import acl_with_user, add_acl_user, read_acl, replica_cn

    pki = _pki(data)
    cn = replica_cn(name)
    if acl is not None:  # refuse a missing or foreign ACL before issuing anything
        acl_with_user(read_acl(acl), cn)
    issued = pki.issue_replica(name)
    print(f"{issued.cert}\n{issued.key}")
    if acl is None:
        print(f"broker user {cn}: give it the controller's block in the broker ACL "
              "(--acl FILE adds it; deploy/mosquitto/edgefleet.acl)")  # fmt: skip
    elif add_acl_user(acl, cn):
        print(f"added user {cn} to {acl}: reload the broker (systemctl reload mosquitto)")
    else:
        print(f"{acl} already has user {cn}")


@app.command("issue")
def issue(device_id: DeviceId, data: DataDir) -> None:
    """Issue a device key + certificate (dev only)."""
    from edgefleet.controller.pki import device_identity

    device = device_identity(device_id)
    issued = _pki(data).issue_pair(f"device-{device}", device)
    print(f"{issued.cert}\n{issued.key}")


@app.command("revoke")
def revoke(device_id: DeviceId, data: DataDir) -> None:
    """Revoke a device's certificate (updates the CRL)."""
    from edgefleet.shared.topics import validate_device_id

    pki = _pki(data)
    device = validate_device_id(device_id)
    cert = pki.folder / f"device-{device}.pem"
    if not cert.exists():
        raise ConfigError(f"no certificate for {device} in {pki.folder}")
    pki.revoke(cert.read_bytes(), device)
    print(f"revoked {device}; restart or SIGHUP the broker so it reads {pki.crl_path}")


@app.command("crl")
def crl(data: DataDir) -> None:
    """Re-sign the CRL now (the controller also does it)."""
    pki = _pki(data)
    expires = pki.renew_crl()
    print(f"{pki.crl_path} re-signed; valid until {expires:%Y-%m-%d %H:%M} UTC "
          "(SIGHUP the broker so it reads it)")  # fmt: skip


@app.command("renew")
def renew(
    data: DataDir,
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="broker, controller or controller-NAME")] = None,
    all_services: Annotated[bool, typer.Option(
        "--all-services", help="every service cert")] = False,
    days: Annotated[int, typer.Option("--days", help="new lifetime (default 365)")] = 365,
    rotate_key: Annotated[bool, typer.Option(
        "--rotate-key", help="a new key too (default: keep the key)")] = False,
    broker_dir: Annotated[Path | None, typer.Option(
        "--broker-dir", metavar="DIR", help="also replace the broker's copy written by "
        "`pki init --broker-user` (owner and mode kept)")] = None,
) -> None:  # fmt: skip
    """Re-issue service certificates (broker, controller, replicas) before they expire."""
    from edgefleet.controller.pki import check_owner, finish_pair, replace_pair

    pki = _existing_pki(data)
    if not 1 <= days <= 3650:
        raise ConfigError(f"--days {days}: give 1 to 3650")
    stems = _renew_stems(pki, name, all_services)
    dest = broker_dir if broker_dir and "broker" in stems else None
    if dest is not None:  # refuse before renewing anything
        for file in ("broker.pem", "broker.key"):
            if not (dest / file).exists():
                raise ConfigError(f"--broker-dir: no {dest / file} to replace")
            check_owner(dest / file)
    for stem in stems:
        expires = pki.renew_service(stem, timedelta(days=days), rotate_key)
        print(f"{pki.folder / stem}.pem renewed{' with a new key' if rotate_key else ''}; "
              f"valid until {expires:%Y-%m-%d %H:%M} UTC")  # fmt: skip
    if dest is not None:
        finish_pair(dest / "broker.key", dest / "broker.pem")
        key = (pki.folder / "broker.key").read_bytes() if rotate_key else None
        replace_pair(dest / "broker.key", key, dest / "broker.pem",
                     (pki.folder / "broker.pem").read_bytes())  # fmt: skip
        print(f"the broker's copy in {dest} replaced (owner and mode kept)")
    for stem in stems:
        print(f"now: {_reload_hint(stem)}")


def _renew_stems(pki: DevicePki, name: str | None, all_services: bool) -> list[str]:
    stems = pki.service_stems()
    if all_services == (name is not None):
        raise ConfigError("give one service certificate (broker, controller, "
                          "controller-NAME) or --all-services")  # fmt: skip
    if name is None:
        return stems
    for stem in (name, f"controller-{name}"):  # a replica by its own name too
        if stem in stems:
            return [stem]
    raise ConfigError(f"no service certificate {name!r} in {pki.folder}; there are: "
                      f"{', '.join(stems) or 'none'}")  # fmt: skip


def _reload_hint(stem: str) -> str:
    if stem == "broker":
        return ("SIGHUP the broker (systemctl reload mosquitto) so new handshakes get the new "
                "certificate; copy it to the broker's folder first if it reads a copy "
                "(--broker-dir)")  # fmt: skip
    return (
        f"restart the controller that uses {stem}.pem (systemctl restart "
        "edgefleet-controller): its MQTT link reads the certificate when it connects"
    )


@app.command("status")
def status(
    data: DataDir,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="the controller's database, when not SQLite in DATA "
        "(devices whose certificate renewal is failing)")] = None,
) -> None:  # fmt: skip
    """Expiry of the CA, CRL and service certificates."""
    pki = _existing_pki(data)
    now = datetime.now(timezone.utc)
    for what, path, expires in pki.status():
        if expires is None:
            print(f"{what:<11} missing or unreadable  {path}")
            continue
        left = (expires - now).days
        # The controller renews the CRL with 20 days left: under 10 it has not been running.
        soon = 10 if what == "CRL" else 30
        warn = "  EXPIRED" if expires <= now else ("  renew soon" if left < soon else "")
        print(f"{what:<11} {expires:%Y-%m-%d %H:%M} UTC ({left} days left){warn}  {path}"
              f"\n{'':<11} renew: {_renew_hint(what, path)}")  # fmt: skip
    print("devices     each agent renews its own certificate with a third of its lifetime "
          "left (POST /v1/devices/ID/certificate)")  # fmt: skip
    _print_devices(data, database_url, now)


def _renew_hint(what: str, path: str) -> str:
    """The command that renews the row ``what`` of :meth:`DevicePki.status`."""
    if what == "device CA":
        return "no in-place renewal: a new CA and re-enrollment (docs/TRUST.md)"
    if what == "CRL":
        return "the controller re-signs it; by hand: edgefleet pki crl"
    return f"edgefleet pki renew {Path(path).stem}"


def _print_devices(data: Path, database_url: str | None, now: datetime) -> None:
    """Enrolled devices whose certificate is close to expiry: their renewal is failing."""
    from sqlmodel import Session

    from edgefleet.controller.db import make_engine
    from edgefleet.controller.device_certs import device_cert_expiries
    from edgefleet.controller.settings import Settings

    settings = Settings(data_dir=data, database_url=database_url)
    if database_url is None and not (data / "edgefleet.db").exists():
        print("            (no controller database here: device certificates not shown)")
        return
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as session:
            expiries = device_cert_expiries(session)
    finally:
        engine.dispose()
    late = sorted((exp, dev) for dev, exp in expiries.items() if exp - now < DEVICE_WARN)
    print(f"            {len(expiries)} enrolled, {len(late)} with under "
          f"{DEVICE_WARN.days} days left (renewal failing: is the device reaching the "
          "controller?)")  # fmt: skip
    for expires, device in late:
        left = (expires - now).days
        warn = "EXPIRED: enroll it again" if expires <= now else f"{left} days left"
        print(f"  {device:<24} {expires:%Y-%m-%d %H:%M} UTC  {warn}")

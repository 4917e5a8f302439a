"""``edgefleet pki ...``: the device PKI of a controller data folder (controller/pki.py).

Standard library only at import time; the handlers live in ``edgefleet.controller.pki``.
"""

from __future__ import annotations

from typing import Any

H = "edgefleet.controller.pki"


def register(sub: Any) -> None:
    pki = sub.add_parser("pki", help="device CA, broker and controller certificates")
    psub = pki.add_subparsers(dest="pki_command", required=True)
    init = psub.add_parser("init", help="create DATA/pki: device CA, broker, controller, CRL")
    init.add_argument("--data", required=True, help="controller data folder")
    init.add_argument(
        "--broker-name",
        action="append",
        default=None,
        help="host name or IP the broker certificate names (repeat; default localhost)",
    )
    init.add_argument(
        "--broker-user",
        metavar="USER[:GROUP]",
        help="also write the broker's files (CA, server cert and key, CRL) to --broker-dir, "
        "owned by USER (Mosquitto: mosquitto), key 0440, folder 0750",
    )
    init.add_argument(
        "--broker-dir",
        default="/etc/edgefleet/pki",
        help="where --broker-user's files go (deploy/mosquitto/mosquitto.conf reads them)",
    )
    init.set_defaults(handler=f"{H}:cmd_init")
    replica = psub.add_parser("replica", help="a controller replica's own broker certificate")
    replica.add_argument("--data", required=True)
    replica.add_argument("name", help="replica name: CN edgefleet-controller-NAME")
    replica.add_argument("--acl", metavar="FILE", help="also give the replica the controller's "
                         "rights in this broker ACL (/etc/mosquitto/edgefleet.acl)")  # fmt: skip
    replica.set_defaults(handler=f"{H}:cmd_replica")
    issue = psub.add_parser("issue", help="issue a device key + certificate (dev only)")
    issue.add_argument("--data", required=True)
    issue.add_argument("device_id")
    issue.set_defaults(handler=f"{H}:cmd_issue")
    revoke = psub.add_parser("revoke", help="revoke a device's certificate (updates the CRL)")
    revoke.add_argument("--data", required=True)
    revoke.add_argument("device_id")
    revoke.set_defaults(handler=f"{H}:cmd_revoke")
    crl = psub.add_parser("crl", help="re-sign the CRL now (the controller also does it)")
    crl.add_argument("--data", required=True)
    crl.set_defaults(handler=f"{H}:cmd_crl")
    renew = psub.add_parser("renew", help="re-issue service certificates (broker, "
                            "controller, replicas) before they expire")  # fmt: skip
    renew.add_argument("--data", required=True)
    renew.add_argument("name", nargs="?", help="broker, controller or controller-NAME")
    renew.add_argument("--all-services", action="store_true", help="every service cert")
    renew.add_argument("--days", type=int, default=365, help="new lifetime (default 365)")
    renew.add_argument("--rotate-key", action="store_true", help="a new key too (default: "
                       "keep the key)")  # fmt: skip
    renew.add_argument("--broker-dir", metavar="DIR", help="also replace the broker's copy "
                       "written by `pki init --broker-user` (owner and mode kept)")  # fmt: skip
    renew.set_defaults(handler=f"{H}:cmd_renew")
    status = psub.add_parser("status", help="expiry of the CA, CRL and service certificates")
    status.add_argument("--data", required=True)
    status.add_argument("--database-url", help="the controller's database, when not SQLite "
                        "in DATA (devices whose certificate renewal is failing)")  # fmt: skip
    status.set_defaults(handler=f"{H}:cmd_status")
    register_trust(sub)
    register_keys(sub)


C = "edgefleet.controller.signing.ceremony"


def register_keys(sub: Any) -> None:
    """``edgefleet keys init|rotate``: the image repository's key ceremonies."""
    keys = sub.add_parser("keys", help="TUF signing keys: create the repositories, rotate keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = ksub.add_parser("init", help="image repository (root threshold) and director")
    init.add_argument("--data", required=True, help="controller data folder")
    init.add_argument(
        "--offline-keys",
        metavar="DIR",
        default=None,
        help="where root, targets and models keys go (default DATA/offline-keys)",
    )
    init.add_argument("--root-threshold", type=int, default=2)
    init.add_argument("--root-keys", type=int, default=3)
    init.add_argument(
        "--models-key-online",
        action="store_true",
        help="keep the models key on the controller (plain `model push` signs)",
    )
    init.set_defaults(handler=f"{C}:cmd_init")
    rotate = ksub.add_parser("rotate", help="new key for ROLE; a new root trusts it")
    rotate.add_argument(
        "role",
        choices=["root", "targets", "snapshot", "timestamp", "models"]
        + [f"director-{r}" for r in ("root", "targets", "snapshot", "timestamp")],
    )
    rotate.add_argument("--data", required=True, help="controller data folder (stopped)")
    rotate.add_argument(
        "--offline-keys",
        metavar="DIR",
        default=None,
        help="folder with the root (and targets) keys (default DATA/offline-keys)",
    )
    rotate.set_defaults(handler=f"{C}:cmd_rotate")


T = "edgefleet.controller.trust_cmds"


def register_trust(sub: Any) -> None:
    """``edgefleet token ...`` and ``edgefleet audit list``."""
    token = sub.add_parser("token", help="operator API tokens (viewer, operator, admin)")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="make a token; its secret is printed once")
    create.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    create.add_argument("--name", default=None, help="who or what holds it (the audit actor)")
    create.add_argument(
        "--data", default=None, metavar="DIR",
        help="write into this controller data folder directly (the first admin token)",
    )  # fmt: skip
    create.add_argument(
        "--database-url", default=None, metavar="URL",
        help="with --data: the controller's database when it is not SQLite in DIR "
        "(default: $EDGEFLEET_DATABASE_URL, as `controller serve` reads it)",
    )  # fmt: skip
    create.add_argument(
        "--quiet", action="store_true",
        help="print only the secret: export EDGEFLEET_TOKEN=$(edgefleet token create ...)",
    )  # fmt: skip
    create.set_defaults(handler=f"{T}:token_create")
    tlist = tsub.add_parser("list", help="tokens, their roles and state (admin)")
    tlist.add_argument("--json", action="store_true")
    tlist.set_defaults(handler=f"{T}:token_list")
    revoke = tsub.add_parser("revoke", help="revoke a token by name (admin)")
    revoke.add_argument("name")
    revoke.set_defaults(handler=f"{T}:token_revoke")

    audit = sub.add_parser("audit", help="the audit log of operator actions")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    alist = asub.add_parser("list", help="newest first")
    alist.add_argument("--target", default=None, help="only entries about this target")
    alist.add_argument("--limit", type=int, default=200)
    alist.add_argument("--json", action="store_true")
    alist.set_defaults(handler=f"{T}:audit_list")

"""deploy/emqx/ (an EMQX 5 cluster in place of Mosquitto) grants exactly the topics the code
uses, in the directions it uses them, and the same rules as deploy/mosquitto/edgefleet.acl
(which runs on a real broker in the integration tests); its settings keep what the
Mosquitto config promises (identity from the certificate, queue and inflight limits).
No EMQX runs here: these are checks of the files against the code, not of a broker."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml
from edgefleet.controller import mqtt_link
from edgefleet.shared import topics
from edgefleet.shared.topics import FLEET_INGEST, PREFIX, SHARE_GROUP, Channel, fleet_filter

REPO = Path(__file__).resolve().parent.parent
EMQX = REPO / "deploy" / "emqx"
MOSQUITTO = REPO / "deploy" / "mosquitto"
DEVICE = f"{PREFIX}/${{username}}"  # a device's own topics in EMQX's placeholder form

Rule = tuple[str, str, str]  # (who: device | controller, action: subscribe | publish, topic)


def _emqx_rules() -> tuple[set[Rule], set[str]]:
    """The allow rules of deploy/emqx/acl.conf, and the controller regexes they name."""
    text = "\n".join(ln.split("%", 1)[0] for ln in (EMQX / "acl.conf").read_text().splitlines())
    terms = [t.strip() for t in re.split(r"\}\.\s*", text) if t.strip()]
    assert terms[-1] == "{deny, all", "the ACL must end by refusing everything else"
    rules: set[Rule] = set()
    regexes = set()
    pattern = re.compile(
        r'^\{allow,\s*(all|\{username,\s*\{re,\s*"([^"]+)"\}\}),\s*(subscribe|publish),'
        r"\s*\[(.*)\]$",
        re.DOTALL,
    )
    for term in terms[:-1]:
        match = pattern.match(term)
        assert match is not None, f"a rule this test cannot read: {term}"
        who = "device" if match.group(1) == "all" else "controller"
        if match.group(2):
            regexes.add(match.group(2))
        for topic in re.findall(r'"([^"]*)"', match.group(4)):
            rules.add((who, match.group(3), topic))
    return rules, regexes


def _mosquitto_rules() -> tuple[set[Rule], set[str]]:
    """deploy/mosquitto/edgefleet.acl in the same form, and its controller user names."""
    rules: set[Rule] = set()
    users, user = set(), None
    action = {"read": "subscribe", "write": "publish"}
    for line in (MOSQUITTO / "edgefleet.acl").read_text().splitlines():
        words = line.split("#", 1)[0].split() if not line.lstrip().startswith("#") else []
        if not words:
            continue
        if words[0] == "user":
            user = words[1]
            users.add(user)
        elif words[0] == "pattern":
            topic = words[2].replace("%u", "${username}")
            rules.add(("device", action[words[1]], topic))
        elif words[0] == "topic":
            assert user is not None and user.startswith("edgefleet-controller"), line
            rules.add(("controller", action[words[1]], words[2]))
    return rules, users


def _agent_subscribed_channels() -> set[Channel]:
    """The channels the agent's MQTT link subscribes to, read from its source."""
    tree = ast.parse((REPO / "agent" / "mqtt_link.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "subscribe":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and getattr(inner.value, "id", "") == "Channel":
                    found.add(Channel[inner.attr])
    assert found, "the agent subscribes to no channel: this test lost track of its code"
    return found


def _from_the_code() -> set[Rule]:
    share = f"$share/{SHARE_GROUP}/"
    controller_reads = {f.removeprefix(share) for f, _ in mqtt_link.subscriptions()}
    read_channels = {c for c in Channel if fleet_filter(c) in controller_reads}
    written = set(Channel) - read_channels
    assert written == _agent_subscribed_channels(), "agent and controller disagree"
    controller_writes = {fleet_filter(c) for c in written}
    controller_writes |= {FLEET_INGEST, mqtt_link.DYNSEC_TOPIC}
    device = {("device", "publish", f"{DEVICE}/{c.value}") for c in read_channels}
    device |= {("device", "subscribe", f"{DEVICE}/{c.value}") for c in written}
    device.add(("device", "subscribe", FLEET_INGEST))  # agent/mqtt_link.py: the hold
    return (
        device
        | {("controller", "subscribe", t) for t in controller_reads}
        | {("controller", "publish", t) for t in controller_writes}
    )


def test_the_cluster_acl_grants_exactly_the_topics_the_code_uses() -> None:
    rules, _ = _emqx_rules()
    expected = _from_the_code()
    assert rules == expected, (
        f"granted but unused: {sorted(rules - expected)}; "
        f"used but not granted: {sorted(expected - rules)}"
    )
    # Every topic the code names is in a rule: a new constant fails here until granted.
    constants = {v for m in (topics, mqtt_link) for k, v in vars(m).items()
                 if k.isupper() and isinstance(v, str) and "/" in v and v != PREFIX}  # fmt: skip
    assert constants <= {t for _, _, t in rules}, constants - {t for _, _, t in rules}


def test_the_cluster_acl_is_the_mosquitto_acl() -> None:
    emqx, regexes = _emqx_rules()
    mosquitto, users = _mosquitto_rules()
    assert emqx == mosquitto
    (regex,) = regexes
    for user in users:
        assert re.fullmatch(regex, user), f"{user} would lose its rights on EMQX"
    for name in ("edgefleet-controller-7", "edgefleet-controller-eu.1"):  # any `pki replica`
        assert re.fullmatch(regex, name)
    for name in ("line3-cam-07", "edgefleet-controllerx", "edgefleet-controller-"):
        assert not re.fullmatch(regex, name)


def _setting(text: str, key: str) -> str:
    match = re.search(rf"^\s*{re.escape(key)}\s*=\s*(.+?)\s*$", text, re.MULTILINE)
    assert match is not None, f"emqx.conf has no {key}"
    return match.group(1).strip('"')


def test_the_cluster_settings_keep_the_mosquitto_promises() -> None:
    conf = (EMQX / "emqx.conf").read_text()
    mosquitto = (MOSQUITTO / "mosquitto.conf").read_text()

    def mosq(key: str) -> str:
        match = re.search(rf"^{key}\s+(\S+)", mosquitto, re.MULTILINE)
        assert match is not None, key
        return match.group(1)

    assert _setting(conf, "peer_cert_as_username") == "cn"
    assert _setting(conf, "peer_cert_as_clientid") == "cn"
    assert _setting(conf, "no_match") == "deny"
    assert _setting(conf, "verify") == "verify_peer"
    assert _setting(conf, "fail_if_no_peer_cert") == "true"
    assert _setting(conf, "bind").endswith(":" + mosq("listener"))
    assert int(_setting(conf, "max_inflight")) >= mqtt_link.RECEIVE_MAXIMUM
    assert int(_setting(conf, "max_mqueue_len")) == int(mosq("max_queued_messages"))
    assert _setting(conf, "shared_subscription") == "true"
    assert _setting(conf, "storage_type") == "disc"  # retained state survives a restart
    # The certificate files are the ones `pki init` writes for the broker (the names
    # mosquitto.conf reads), from the ceremony's broker-pki volume as mounted.
    override = yaml.safe_load((EMQX / "compose.emqx.yaml").read_text())
    settings = [ln.split("#", 1)[0] for ln in conf.splitlines()]
    assert not any("cookie" in ln for ln in settings), "the cookie is a secret: env only"
    for node in ("emqx-1", "emqx-2", "emqx-3"):
        service = override["services"][node]
        sources = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        (certs,) = [target for target, source in sources.items() if source == "broker-pki"]
        for emqx_key, mosq_key in (("cacertfile", "cafile"), ("certfile", "certfile"),
                                   ("keyfile", "keyfile")):  # fmt: skip
            path = Path(_setting(conf, emqx_key))
            assert path.parent.as_posix() == certs and path.name == Path(mosq(mosq_key)).name
        assert sources[_setting(conf, "path")] == "./emqx/acl.conf"
        assert service["environment"]["EMQX_NODE__COOKIE"].startswith("${EMQX_COOKIE:?")

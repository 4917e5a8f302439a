"""deploy/compose.yaml validates (`docker compose config`, or Debian's `docker-compose`
1.29 where the plugin is missing; neither needs a Docker daemon) and agrees with the code
and the other deploy files: every controller setting it passes is a real one and loads,
each replica has its own broker identity with an ACL block, the proxy's internal location
is the controllers' offload prefix, and no secret has a default."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgefleet.controller.settings import ENV_PREFIX, ServeConfig, Settings

from edgefleet.cli import parse_args

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SECRETS = {
    "POSTGRES_PASSWORD": "pgsecret0123",
    "MINIO_ROOT_USER": "minioroot",
    "MINIO_ROOT_PASSWORD": "miniosecret0123",
    "S3_ACCESS_KEY": "edgefleetkey",
    "S3_SECRET_KEY": "s3secret0123",
}
ENV = {"COMPOSE_PROJECT_NAME": "edgefleet", "EDGEFLEET_PUBLIC_HOST": "fleet.example.internal",
       **SECRETS}  # fmt: skip
CONTROLLERS = ("controller-1", "controller-2")


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if plugin.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _config(
    tmp_path: Path, env: dict[str, str], *overrides: Path
) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose here (./quickstart test adds it)")
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    # Only where the tools and their plugins are (~/.docker/cli-plugins) from outside: a
    # variable set in this shell must not fill a gap in the env file.
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_CONFIG") if k in os.environ}
    return subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE),
         *(a for o in overrides for a in ("-f", str(o))), "config"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=keep,
    )  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done = _config(tmp_path_factory.mktemp("compose"), ENV)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _published(service: dict[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["published"]))
        else:  # "HOST:PUBLISHED:TARGET" or "PUBLISHED:TARGET"
            ports.add(int(str(port).split(":")[-2]))
    return ports


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_flags(parse_args(["controller", "serve"]))


def test_every_secret_is_required_and_named_when_missing(tmp_path: Path) -> None:
    text = COMPOSE.read_text()
    for name in [*SECRETS, "EDGEFLEET_PUBLIC_HOST"]:
        uses = re.findall(r"\$\{" + name + r"(\S{0,2})", text)
        assert uses, f"compose.yaml never uses {name}"
        assert set(uses) == {":?"}, f"{name} has a default or may be empty somewhere"
        assert f"{{{name}:?set {name} in deploy/.env" in text
    # ... and compose itself refuses, naming one (the file as shipped, no env file filled)
    done = _config(tmp_path, {"COMPOSE_PROJECT_NAME": "edgefleet"})
    assert done.returncode != 0
    assert re.search(r"set [A-Z_]+ in deploy/\.env", done.stderr), done.stderr


def test_secrets_only_come_from_the_env_file(rendered: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    for value in SECRETS.values():
        assert value not in text
    seen = "\n".join(
        str(v) for s in rendered["services"].values() for v in _environment(s).values()
    )
    for value in SECRETS.values():
        assert value in seen  # each reaches a service, from the env file alone


def test_controllers_pass_real_settings_that_load(
    rendered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = rendered["services"]
    known = {f"{ENV_PREFIX}{name.upper()}" for name in ServeConfig.model_fields}
    client_ids = set()
    for name in CONTROLLERS:
        env = _environment(services[name])
        ours = {k for k in env if k.startswith(ENV_PREFIX)}
        assert ours <= known, f"{name}: not a controller setting: {sorted(ours - known)}"
        settings = _settings({k: env[k] for k in ours}, monkeypatch)
        assert settings.auth and settings.broker.tls
        assert settings.db_url.startswith("postgresql+psycopg://edgefleet:")
        assert settings.db_url.endswith("@postgres:5432/edgefleet")
        assert settings.artifact_store is not None and "presign=" in settings.artifact_store
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
        client_ids.add(settings.client_id)
    assert len(client_ids) == len(CONTROLLERS), "two replicas would share one MQTT session"


def test_each_replica_has_its_own_identity_in_the_shipped_acl(rendered: dict[str, Any]) -> None:
    acl = (DEPLOY / "mosquitto" / "edgefleet.acl").read_text()
    users = set(re.findall(r"^user\s+(\S+)", acl, re.MULTILINE))
    ceremony = (DEPLOY / "compose" / "ceremony.sh").read_text()
    for name in CONTROLLERS:
        replica = _environment(rendered["services"][name]).get(f"{ENV_PREFIX}REPLICA")
        cn = f"edgefleet-controller-{replica}" if replica else "edgefleet-controller"
        assert cn in users, f"{name} connects as {cn}, which the broker ACL does not know"
        if replica:
            assert f'pki replica --data "$data" {replica}' in ceremony


def test_broker_runs_the_shipped_config_where_the_controllers_look(
    rendered: dict[str, Any],
) -> None:
    broker = rendered["services"]["mosquitto"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in broker["volumes"] if isinstance(v, str)}
    mounts |= {v["target"]: v.get("source", "") for v in broker["volumes"] if isinstance(v, dict)}
    conf = DEPLOY / "mosquitto" / "mosquitto.conf"
    assert Path(mounts["/etc/mosquitto/mosquitto.conf"]) == conf
    assert Path(mounts["/etc/mosquitto/edgefleet.acl"]) == conf.parent / "edgefleet.acl"
    text = conf.read_text()
    (listener,) = re.findall(r"^listener\s+(\d+)", text, re.MULTILINE)
    crl = re.search(r"^crlfile\s+(\S+)", text, re.MULTILINE)
    assert crl is not None and Path(crl.group(1)).parent.as_posix() in mounts  # broker-pki
    assert int(listener) in _published(broker)
    for name in CONTROLLERS:
        mqtt = _environment(rendered["services"][name])[f"{ENV_PREFIX}MQTT"]
        assert mqtt == f"mqtts://mosquitto:{listener}"
    entrypoint = (DEPLOY / "compose" / "broker-entrypoint.sh").read_text()
    assert f"EDGEFLEET_CRL_TARGET:-{crl.group(1)}" in entrypoint


def _locations(text: str) -> list[str]:
    """The `location` blocks of the first server of an nginx file, comments and blank
    lines dropped, whitespace normalised."""
    lines = [" ".join(ln.split("#", 1)[0].split()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("location "))
    blocks, depth = [], 0
    for ln in lines[start:]:
        if depth == 0 and not ln.startswith("location "):
            break
        blocks.append(ln)
        depth += ln.count("{") - ln.count("}")
    return blocks


def test_the_proxy_sends_what_the_controllers_offload(rendered: dict[str, Any]) -> None:
    ours = (DEPLOY / "compose" / "nginx.conf").read_text()
    shipped = (DEPLOY / "nginx" / "edgefleet.conf").read_text()
    assert _locations(ours) == _locations(shipped)
    internal = re.search(r"location (\S+) \{ internal;", " ".join(_locations(ours)))
    assert internal is not None
    for name in CONTROLLERS:
        env = _environment(rendered["services"][name])
        assert env[f"{ENV_PREFIX}OFFLOAD_PREFIX"].rstrip("/") + "/" == internal.group(1)
        listen = env[f"{ENV_PREFIX}LISTEN"].rsplit(":", 1)[1]
        assert f"server {name}:{listen};" in ours
    proxy = rendered["services"]["proxy"]
    assert {8600, 9000} <= _published(proxy)


def test_the_emqx_override_swaps_the_broker_for_a_cluster(tmp_path: Path) -> None:
    override = DEPLOY / "emqx" / "compose.emqx.yaml"
    env = {**ENV, "EMQX_COOKIE": "cookie0123", "EMQX_DASHBOARD_PASSWORD": "dash0123"}
    done = _config(tmp_path, env, override)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert "mosquitto" in services["mosquitto"].get("profiles", [])  # not started by `up`
    nodes = [name for name in services if name.startswith("emqx-")]
    assert len(nodes) == 3
    host = "emqx"
    for name in CONTROLLERS:
        assert _environment(services[name])[f"{ENV_PREFIX}MQTT"] == f"mqtts://{host}:8883"
        assert all(host in services[node]["networks"]["default"]["aliases"] for node in nodes)
    assert f"--broker-name {host}" in (DEPLOY / "compose" / "ceremony.sh").read_text()
    assert 8883 in _published(services["proxy"])
    stream = (DEPLOY / "emqx" / "nginx-stream.conf").read_text()
    for node in nodes:
        (alias,) = [a for a in services[node]["networks"]["default"]["aliases"] if a != host]
        assert f"server {alias}:8883;" in stream


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                    reason="no nginx here")  # fmt: skip
def test_the_proxy_config_passes_nginx_t(tmp_path: Path) -> None:
    text = (DEPLOY / "compose" / "nginx.conf").read_text()
    for host in ("controller-1", "controller-2", "minio"):
        text = text.replace(f"server {host}:", "server 127.0.0.1:")  # no Docker DNS here
    text = text.replace("/tmp/", f"{tmp_path}/")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    (tmp_path / "stream").mkdir()
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=60).stderr
    if "--with-stream" in built.split():  # built in, as in the nginx image (Debian: a module)
        stream = (DEPLOY / "emqx" / "nginx-stream.conf").read_text()
        stream = re.sub(r"server emqx-\d\S*:", "server 127.0.0.1:", stream)
        (tmp_path / "stream" / "mqtt.conf").write_text(stream)
    text = text.replace("/etc/nginx/edgefleet-stream/", f"{tmp_path}/stream/")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run([nginx, "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr

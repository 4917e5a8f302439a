"""``edgefleet agent run``: build every part from the config, start them, stop them cleanly.

Threads: paho's network loop, the frame reader and frame loop (pipeline), the reconcile
loop, the telemetry loop and, on mTLS, the certificate renewal loop. SIGTERM / SIGINT set
one stop flag; shutdown publishes the offline status and joins every thread within a few
seconds.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from edgefleet.agent.candidates import with_candidates
from edgefleet.agent.cert_renewal import CertRenewer, IdentityFiles, recover
from edgefleet.agent.config import AgentConfig, load_config, prepare_data_dir
from edgefleet.agent.dataloop import DataLoop, controller_http
from edgefleet.agent.enroll import read_upload_token
from edgefleet.agent.fingerprint import detect_fingerprint
from edgefleet.agent.hooks import AgentHooks
from edgefleet.agent.hooks import installed as installed_hooks
from edgefleet.agent.metrics import AgentMetrics, MetricsServer, serve
from edgefleet.agent.monitor import WindowAccumulator
from edgefleet.agent.mqtt_link import Hint, MqttLink
from edgefleet.agent.pipeline import FrameSink, Pipeline, open_source
from edgefleet.agent.plan_share import PlanSharer
from edgefleet.agent.profile_select import resolve_profile, with_profile
from edgefleet.agent.reconcile import (
    HealthCheck,
    Identity,
    Loader,
    Reconciler,
    ShadowSettings,
    UpdaterLike,
)
from edgefleet.agent.shadow import ShadowTap
from edgefleet.agent.sinks import build_sink
from edgefleet.agent.slots import ModelSlots
from edgefleet.agent.store import CacheQuota, DeviceStore
from edgefleet.agent.tls import TlsSettings
from edgefleet.agent.watchdog import SystemdNotifier, ping_interval_s
from edgefleet.shared.errors import ArtifactError, ConfigError, RuntimeBackendError
from edgefleet.shared.measure import MEASURE_CONF
from edgefleet.shared.profiles import FirmwareProfile
from edgefleet.shared.protocol import Fingerprint, utcnow
from edgefleet.shared.supervise import Supervisor
from prometheus_client import CollectorRegistry

from edgefleet import __version__
from edgefleet.runtime.foreground import Foreground

log = logging.getLogger("edgefleet.agent")

HINT_QUEUE_SIZE = 16  # hints; more than that coalesce into the pending refresh
JOIN_TIMEOUT_S = 3.0  # seconds per thread at shutdown


def run_from_file(config_path: Path) -> int:
    """The daemon of the config at ``config_path``, until SIGTERM or SIGINT."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = load_config(config_path)
    stop = threading.Event()
    _on_signals(stop)
    return run(config, stop)


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def device_loader(
    config: AgentConfig,
    fp: Fingerprint,
    profile: FirmwareProfile | None,
    foreground: Foreground | None = None,
) -> tuple[Loader, str]:
    """The loader for this device's profile (providers, native TensorRT), its detectors
    also giving candidates (:func:`candidate_floor`), and its /metrics backend label;
    ``foreground``: the frame loop a model prepared in the background gives way to."""
    import onnxruntime as ort

    from edgefleet.runtime.engine_cache import GpuFacts
    from edgefleet.runtime.loader import LoaderSettings, backend_label, make_loader

    settings = LoaderSettings(
        conf=config.conf,
        iou=config.iou,
        engine_dir=config.data_dir / "engines",
        profile=profile,
        gpu=GpuFacts(tensorrt=fp.tensorrt, compute_capability=fp.compute_capability),
    )
    sharer = plan_sharer(config)
    on_built = sharer.offer if sharer is not None else None
    loader = with_candidates(make_loader(settings, on_built, foreground), candidate_floor(config))
    return loader, backend_label(settings, ort.get_available_providers())


def candidate_floor(config: AgentConfig) -> float:
    """How low the detector decodes. One decode gives the detections, the raw output's
    summary (the health check's NaN and collapse checks) and the candidates below the cut:
    for the sampler, and down to MEASURE_CONF for the telemetry window, which measures what
    the model card measured whatever this device's own ``conf``."""
    floor = config.sampling.candidate_floor if config.sampling.enabled else MEASURE_CONF
    return float(min(floor, MEASURE_CONF))


def _hooks(given: AgentHooks | None) -> AgentHooks:
    """The hooks given, else those installed in this process (agent/hooks.py)."""
    return installed_hooks() if given is None else given


def device_class(
    config: AgentConfig, hooks: AgentHooks | None = None
) -> tuple[Fingerprint, FirmwareProfile | None]:
    """What this device is (detected; a test's hook may say otherwise) and its profile."""
    fingerprint = _hooks(hooks).fingerprint(detect_fingerprint())
    profile = resolve_profile(fingerprint, name=config.profile, folder=config.profiles_dir)
    return with_profile(fingerprint, profile), profile


def plan_sharer(config: AgentConfig) -> PlanSharer | None:
    """Engines this device builds are offered to the controller (``share_built_plans``)."""
    if not config.share_built_plans:
        return None
    return PlanSharer(controller_http(config), read_upload_token(config.data_dir))


def build_updater(config: AgentConfig, hooks: AgentHooks | None = None) -> UpdaterLike[Any]:
    from edgefleet.agent.updater import ModelUpdater, UpdaterConfig

    return ModelUpdater(
        UpdaterConfig(
            controller_url=config.controller_url,
            device_id=config.device_id,
            data_dir=config.data_dir,
            download_rate_bps=_hooks(hooks).download_rate_bps(),
        )
    )


def restore(store: DeviceStore, slots: ModelSlots, loader: Loader) -> int:
    """Serve the committed model at once; fall back to the previous one if it will not load.
    Returns the fallbacks taken (reported in the first telemetry window)."""
    fallbacks = 0
    store.load()
    while (pointer := store.state.current) is not None:
        try:
            slots.stage(loader(store.artifact_path(pointer)), pointer)
        except (RuntimeBackendError, ArtifactError) as e:
            log.error(  # noqa: TRY400 - a one-line reason, not a traceback
                "cannot load committed %s %s (%s)", pointer.model, pointer.version, e
            )
            store.fall_back()
            fallbacks += 1
            continue
        slots.swap()
        slots.commit()
        log.info("serving %s %s", pointer.model, pointer.version)
        return fallbacks
    log.info("no model installed yet: waiting for the first one")
    return fallbacks


def health_timeout_s(config: AgentConfig) -> float:
    frames, fps = config.health_check_frames, config.source.fps
    per_frame = 1.0 / fps if fps > 0 else 0.0
    return float(10.0 + 3 * frames * (per_frame + config.latency_budget_ms / 1000.0))


def telemetry_loop(
    monitor: WindowAccumulator, out: DataLoop, stop: threading.Event, window_s: float
) -> None:
    while not stop.wait(window_s):
        window = monitor.roll(utcnow())
        if window.frames or window.drops or window.fallbacks:
            out.publish_telemetry(window)  # drift scored, spooled, sent when the broker acks


def listen(link: MqttLink, data: DataLoop) -> None:
    """What the controller pushes on ``commands`` for the data loop (flags only: paho's
    thread calls these)."""
    link.on_card = data.baselines.announced  # a card arrived: the next window asks for it
    if data.sampler is not None:
        link.on_drift = data.sampler.drift_alert  # a drift alert opens the drift budget
        link.on_settings = data.sampler.settings_announced  # new settings: ask now


def _feed_watchdog_until(stop: threading.Event, pipeline: Pipeline, supervisor: Supervisor) -> None:
    """Tell systemd we are up, then ping its watchdog until ``stop``."""
    notifier = SystemdNotifier.from_env(os.environ)
    notifier.ready()
    ping_s = ping_interval_s(os.environ)
    while not stop.wait(ping_s):
        # A hung frame loop, or a thread that keeps failing, stops the pings: systemd
        # restarts the agent.
        if pipeline.alive() and supervisor.healthy():
            notifier.watchdog()
    notifier.stopping()


def run(config: AgentConfig, stop: threading.Event, hooks: AgentHooks | None = None) -> int:
    """Run the agent until ``stop``; ``hooks``: a test's (agent/hooks.py), else the ones
    installed in this process (none on a device)."""
    if config.source.kind in ("folder", "video") and not Path(config.source.path).exists():
        raise ConfigError(f"frame source {config.source.path} does not exist")
    prepare_data_dir(config.data_dir)
    fingerprint, profile = device_class(config, hooks := _hooks(hooks))
    log.info("firmware profile: %s", profile.name if profile else "none fits; CPU defaults")
    foreground = Foreground()  # the frame loop's claim on the CPU while a model is prepared
    loader, backend = device_loader(config, fingerprint, profile, foreground)
    quota = CacheQuota(config.cache.max_artifacts, config.cache.max_bytes)
    store = DeviceStore(config.data_dir, quota)
    slots = ModelSlots()
    monitor = WindowAccumulator(config.device_id, utcnow(), low_confidence=config.low_confidence)
    monitor.record_fallback(restore(store, slots, loader))  # in the first window sent

    hints: queue.Queue[Hint] = queue.Queue(maxsize=HINT_QUEUE_SIZE)
    identity_files = _identity_files(config)  # a switch a crash cut short is finished first
    tls = TlsSettings(config.tls.ca, config.tls.cert, config.tls.key) if config.tls else None
    link = MqttLink(config.device_id, config.mqtt_host, config.mqtt_port, hints, tls=tls)
    data = DataLoop.build(config, link)  # drift scores, store-and-forward, sampler
    listen(link, data)
    health = HealthCheck(config.health_check_frames, config.latency_budget_ms)
    registry = CollectorRegistry()  # this agent's own: no process-wide default registry
    metrics = AgentMetrics(registry, backend)
    metrics.track_telemetry(data.forwarder)  # windows held back by the controller's hold
    source = open_source(
        config.source.kind,
        config.source.path,
        loop=config.source.loop,
        on_skip=lambda kind: metrics.skipped.labels(kind).inc(),
    )
    sinks = [build_sink(spec, config.device_id) for spec in config.sinks]
    shadow = _shadow_settings(config)
    # Always tapped (idle until armed): a rollout stage may ask for a shadow phase.
    tap = shadow.tap if shadow is not None else ShadowTap()
    frame_sinks: list[FrameSink] = [
        monitor, health, metrics, *(sink for sink, _ in sinks), *data.sinks(), tap
    ]  # fmt: skip
    pipeline = Pipeline(source, slots, frame_sinks, fps=config.source.fps, foreground=foreground)
    identity = Identity(config.device_id, config.labels, fingerprint, __version__)
    reconciler = Reconciler(
        identity,
        updater=build_updater(config, hooks),
        store=store,
        slots=slots,
        health=health,
        reporter=link,
        loader=loader,
        stop=stop,
        health_timeout_s=health_timeout_s(config),
        hooks=hooks,
        shadow=shadow,
        shadow_tap=tap,
    )

    link.start()
    for sink, _ in sinks:
        sink.start()
    pipeline.start()
    # Daemon threads: a download still running at shutdown must not hold the process; its
    # writes are durable (temp file + rename), so being cut off mid-way leaves no half file.
    # Each loop is supervised: a failure is logged, counted and restarted with backoff.
    supervisor = Supervisor(
        stop, on_restart=lambda name: metrics.thread_restarts.labels(name).inc()
    )
    loops: list[tuple[str, Callable[[], None]]] = [
        (
            "reconcile",
            partial(
                reconciler.run,
                hints,
                config.poll_interval_s,
                connected_poll_s=config.connected_poll_interval_s,
                link_up=link.connected.is_set,
            ),
        ),
        ("telemetry", partial(telemetry_loop, monitor, data, stop, config.telemetry_window_s)),
        *data.loops(stop),
        *_renewal_loop(config, identity_files, link, stop),
    ]
    threads = [supervisor.thread(name, loop) for name, loop in loops]
    for t in threads:
        t.start()
    server = _serve_metrics(config, registry)
    log.info("agent %s running (broker %s)", config.device_id, config.mqtt_url)
    _feed_watchdog_until(stop, pipeline, supervisor)
    _shutdown(threads, pipeline, monitor, link, slots, data=data)
    for sink, release in sinks:
        sink.stop(JOIN_TIMEOUT_S)
        release()
    if server is not None:
        server.close()
    return 0


def _identity_files(config: AgentConfig) -> IdentityFiles | None:
    """The device's certificate files (mTLS only), a half-done renewal switch finished."""
    if config.tls is None:
        return None
    files = IdentityFiles(config.tls.cert, config.tls.key, config.tls.ca)
    if (done := recover(files)) != "none":
        log.warning("device certificate switch %s after an interruption", done)
    return files


def _renewal_loop(
    config: AgentConfig, files: IdentityFiles | None, link: MqttLink, stop: threading.Event
) -> list[tuple[str, Callable[[], None]]]:
    """The device renews its certificate before expiry, then reconnects the broker with it."""
    if files is None:
        return []
    renewer = CertRenewer(controller_http(config), config.device_id, files, link.reload_identity)
    return [("cert-renewal", partial(renewer.run, stop))]


def _shadow_settings(config: AgentConfig) -> ShadowSettings | None:
    cfg = config.shadow
    if cfg is None:
        return None
    tap = ShadowTap(every=cfg.every)
    return ShadowSettings(tap, cfg.frames, cfg.timeout_s, cfg.min_match_rate)


def _serve_metrics(config: AgentConfig, registry: CollectorRegistry) -> MetricsServer | None:
    if config.metrics_port is None:
        return None
    try:
        server = serve(registry, config.metrics_port, config.metrics_addr)
    except OSError as e:
        raise ConfigError(
            f"metrics_port {config.metrics_port}: cannot listen on {config.metrics_addr}: {e}"
        ) from e
    log.info("metrics on http://%s:%d/metrics", config.metrics_addr, server.port)
    return server


def _shutdown(
    threads: list[threading.Thread],
    pipeline: Pipeline,
    monitor: WindowAccumulator,
    link: MqttLink,
    slots: ModelSlots,
    *,
    data: DataLoop,
) -> None:
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
    pipeline.stop(JOIN_TIMEOUT_S)
    window = monitor.roll(utcnow())  # the partial last window still counts
    if window.frames or window.drops:
        data.publish_telemetry(window)
    data.close()  # a last try to send the spool; what is left goes out after the restart
    link.stop(JOIN_TIMEOUT_S)  # publishes the offline status first
    slots.close()
    log.info("agent stopped")

"""The agent's half of the data loop, built in one place for the daemon: telemetry windows
scored against the model card and store-and-forwarded, and the frame sampler."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from edgefleet.agent.baseline import BaselineCache, with_drift
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.enroll import read_upload_token
from edgefleet.agent.forward import IngestHold, TelemetryForwarder
from edgefleet.agent.sampler import ControllerSettings, Sampler
from edgefleet.agent.spool import DiskSpool
from edgefleet.shared.card import comparable
from edgefleet.shared.protocol import TelemetryWindow
from edgefleet.shared.topics import Channel

if TYPE_CHECKING:
    from edgefleet.agent.config import AgentConfig
    from edgefleet.agent.mqtt_link import MqttLink
    from edgefleet.agent.pipeline import FrameSink

log = logging.getLogger(__name__)
FINAL_FLUSH_S = 2.0  # seconds at shutdown to send what is spooled; the rest waits on disk


def controller_http(config: AgentConfig) -> ControllerHttp:
    """The agent's HTTP client; over https it pins the device CA and presents the device's
    certificate from ``tls`` (the controller's HTTPS front is deployed separately); once
    enrolled it presents the device's credential on every request."""
    tls = config.tls
    credential = read_upload_token(config.data_dir)
    if tls is not None and config.controller_url.startswith("https://"):
        return ControllerHttp(config.controller_url, config.device_id, ca_bundle=tls.ca,
                              client_cert=tls.cert, client_key=tls.key,
                              credential=credential)  # fmt: skip
    return ControllerHttp(config.controller_url, config.device_id, credential=credential)


class DataLoop:
    def __init__(
        self,
        forwarder: TelemetryForwarder,
        baselines: BaselineCache,
        sampler: Sampler | None,
        http: ControllerHttp,
    ) -> None:
        self.forwarder, self.baselines, self.sampler, self.http = (
            forwarder, baselines, sampler, http,
        )  # fmt: skip

    @classmethod
    def build(cls, config: AgentConfig, link: MqttLink) -> DataLoop:
        http = controller_http(config)
        telemetry = DiskSpool(config.data_dir / "spool" / "telemetry",
                              max_entries=config.telemetry_spool_max)  # fmt: skip

        def publish(payload: bytes, timeout: float) -> bool:
            return bool(link.publish_confirmed(Channel.TELEMETRY, payload, timeout))

        hold = IngestHold()  # the controller's backpressure (agent/forward.py)
        link.on_pressure = hold.apply
        forwarder = TelemetryForwarder(telemetry, publish, link.connected.is_set, hold=hold)
        baselines = BaselineCache(http, config.data_dir / "baselines")
        sampler = None
        s = config.sampling
        if s.enabled:  # no local strategies: the controller's settings may bring some
            spool = DiskSpool(config.data_dir / "spool" / "samples", max_entries=s.spool_max_items,
                              max_bytes=s.spool_max_bytes)  # fmt: skip
            settings = ControllerSettings(http, config.device_id, config.labels, s)
            sampler = Sampler(config.device_id, s, spool, http, rng=random.Random(),
                              upload_token=read_upload_token(config.data_dir),
                              settings=settings, refresh_s=s.settings_refresh_s,
                              refresh_connected_s=s.settings_refresh_connected_s,
                              link_up=link.connected.is_set)  # fmt: skip
        return cls(forwarder, baselines, sampler, http)

    def sinks(self) -> list[FrameSink]:
        return [self.sampler] if self.sampler is not None else []

    def loops(self, stop: threading.Event) -> list[tuple[str, Callable[[], None]]]:
        """The long-running loops (name, body) to run on supervised threads."""
        out: list[tuple[str, Callable[[], None]]] = [
            ("telemetry-out", partial(self.forwarder.run, stop))
        ]
        if self.sampler is not None:
            out.append(("sampler", partial(self.sampler.run, stop)))
        return out

    def publish_telemetry(self, window: TelemetryWindow) -> None:
        """Score the window against its model's card, then spool it for sending."""
        card = self.baselines.get(window.model, window.version)
        scored = with_drift(window, card)
        if (
            self.sampler is not None
            and card is not None
            and comparable(card, window.confidence_edges)
        ):
            self.sampler.note_window(scored, card.detections_per_frame)  # a changed scene
        self.forwarder.submit(scored)

    def close(self) -> None:
        self.forwarder.ack_timeout_s = FINAL_FLUSH_S
        try:
            self.forwarder.flush()
        except OSError as e:
            log.warning("telemetry spool unreadable at shutdown: %s", e)
        self.http.close()

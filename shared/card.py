"""The model card: what ``model push --validation`` measured, and the agent's drift baseline.

Served by the controller at ``/v1/models/{name}/versions/{version}/card``; the agent reads
only :class:`ModelCard` ``confidence_counts`` (and the edges) as its drift baseline. A card
is comparable with a window only when both were measured the same way
(:func:`comparable`: ``shared/measure.py``'s threshold and the same bins).
"""

from __future__ import annotations

from datetime import datetime

from edgefleet.shared.histogram import CONFIDENCE_EDGES
from edgefleet.shared.protocol import utcnow
from pydantic import BaseModel, ConfigDict, Field

CARD_SCHEMA = 1


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    schema_version: int = Field(default=CARD_SCHEMA, alias="schema")
    model: str
    version: str
    created_at: datetime = Field(default_factory=utcnow)
    images: int  # validation images the model ran on
    conf: float  # boxes scored above this are counted (shared/measure.py MEASURE_CONF)
    confidence_edges: list[float] = Field(default_factory=lambda: list(CONFIDENCE_EDGES))
    confidence_counts: list[int]  # every class
    per_class_confidence: dict[str, list[int]] = Field(default_factory=dict)
    detections: int = 0
    detections_per_frame: float = 0.0
    labelled_images: int = 0  # images with a YOLO label file next to them
    map50: float | None = None  # mean over classes with ground truth; None without labels
    ap50_per_class: dict[str, float] = Field(default_factory=dict)
    names: dict[int, str] = Field(default_factory=dict)  # class id -> name, from the model

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()


def comparable(card: ModelCard, edges: list[float]) -> bool:
    """The card counted what windows count: the same threshold and the same bins."""
    from edgefleet.shared.measure import MEASURE_CONF

    return card.conf == MEASURE_CONF and card.confidence_edges == edges


def drift_scores(baseline: list[int], counts: list[int], edges: list[float]) -> dict[str, float]:
    """PSI, Jensen-Shannon distance and Wasserstein-1 of ``counts`` against ``baseline``.

    PSI is smoothed (:data:`~edgefleet.shared.drift.DRIFT_PSEUDOCOUNT`): a window holds a
    few frames, and an EPS-floored PSI reads a bin the window happened to miss as drift.
    Empty on either side means nothing to compare: an empty dict, never an exception.
    """
    from edgefleet.shared.drift import DRIFT_PSEUDOCOUNT, js_distance, psi, wasserstein1

    if len(baseline) != len(counts) or sum(baseline) <= 0 or sum(counts) <= 0:
        return {}
    return {
        "psi": psi(baseline, counts, pseudocount=DRIFT_PSEUDOCOUNT),
        "js": js_distance(baseline, counts),
        "wasserstein": wasserstein1(baseline, counts, edges),
    }

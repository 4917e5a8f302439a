"""/v1/models/{name}/versions/{version}/card: the model card (validation baseline).

``GET`` answers with an ``ETag``; ``If-None-Match`` with it gets a bodiless 304. A card
stored by ``PUT`` is announced (``card`` on ``commands``) to the devices running its
version, so one that was missing it asks at once (controller/announce.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from edgefleet.controller import registry
from edgefleet.controller.announce import announce, card_audience
from edgefleet.controller.api.conditional import etag_of, not_modified
from edgefleet.controller.api.deps import ServicesDep, SessionDep
from edgefleet.controller.cards import CardStore
from edgefleet.controller.services import Services
from edgefleet.shared.card import ModelCard
from edgefleet.shared.errors import ArtifactError
from edgefleet.shared.protocol import Command
from fastapi import APIRouter, Header, Response

router = APIRouter(prefix="/v1/models", tags=["models"])
device_router = APIRouter(prefix="/v1/models", tags=["models"])  # agents read cards too


def card_store(services: Services) -> CardStore:
    return CardStore(services.settings.data_dir / "cards")


@router.put("/{name}/versions/{version}/card")
def put_card(
    name: str, version: str, card: ModelCard, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Store the card ``model push --validation`` computed for an existing version."""
    registry.get_version(session, name, version)
    if (card.model, card.version) != (name, version):
        raise ArtifactError(f"the card is for {card.model}:{card.version}, not {name}:{version}")
    card_store(services).put(card)
    devices = card_audience(session, name, version)
    session.close()  # the pooled connection goes back before the broker is talked to
    announce(services.link, devices, Command(command="card", model=name, version=version))
    return card.model_dump(mode="json", by_alias=True)


@device_router.get("/{name}/versions/{version}/card", response_model=None)
def get_card(
    name: str,
    version: str,
    session: SessionDep,
    services: ServicesDep,
    *,
    response: Response,
    if_none_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | Response:
    registry.get_version(session, name, version)
    card = card_store(services).get(name, version)
    doc = card.model_dump(mode="json", by_alias=True)
    etag = etag_of(doc)
    if not_modified(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return doc

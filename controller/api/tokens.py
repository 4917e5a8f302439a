"""/v1/tokens: operator API tokens (admin only). The secret is in the create answer only."""

from __future__ import annotations

from edgefleet.controller import tokens
from edgefleet.controller.api.deps import ActorNameDep, SessionDep, require
from edgefleet.controller.models.tokens import TokenPublic, TokensPublic
from fastapi import APIRouter
from pydantic import BaseModel, Field

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], dependencies=[require("admin")])


class TokenCreate(BaseModel):
    role: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=64)


class TokenCreated(TokenPublic):
    secret: str  # shown once


@router.post("", response_model=TokenCreated)
def create_token(body: TokenCreate, session: SessionDep, actor: ActorNameDep) -> TokenCreated:
    row, secret = tokens.create_token(session, body.name, body.role, actor)
    return TokenCreated(**TokenPublic.model_validate(row).model_dump(), secret=secret)


@router.get("", response_model=TokensPublic)
def list_tokens(session: SessionDep) -> TokensPublic:
    data = [TokenPublic.model_validate(r) for r in tokens.list_tokens(session)]
    return TokensPublic(data=data, count=len(data))


@router.post("/{name}/revoke", response_model=TokenPublic)
def revoke_token(name: str, session: SessionDep, actor: ActorNameDep) -> TokenPublic:
    row = tokens.revoke_token(session, name, actor)
    return TokenPublic.model_validate(row)

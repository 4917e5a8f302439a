"""TUF metadata kept in the database (``--tuf-store database``) and the signing lock."""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel


class TufMetadata(SQLModel, table=True):
    """One TUF metadata file, when the controller keeps them in the database
    (``--tuf-store database``): ``repo`` is its folder under /tuf (``image/metadata``,
    ``director/<device>/metadata``), ``name`` the file name (signing/storage.py)."""

    __tablename__ = "tuf_metadata"
    repo: str = Field(primary_key=True, max_length=160)
    name: str = Field(primary_key=True, max_length=160)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)  # of data: the ETag /tuf answers with


class TufLock(SQLModel, table=True):
    """The row whose UPDATE serialises TUF signing on SQLite (PostgreSQL: an advisory lock)."""

    __tablename__ = "tuf_lock"
    name: str = Field(primary_key=True, max_length=32)
    holds: int = 0  # how often it was taken (a counter the UPDATE needs something to change)

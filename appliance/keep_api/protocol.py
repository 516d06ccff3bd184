"""Wire models for Keep's own routes: sessions and their documents."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from appliance.openai.protocol import Wire


class SessionOut(BaseModel):
    id: str
    object: Literal["session"] = "session"
    expires_at: int


class SessionDeleted(BaseModel):
    id: str
    object: Literal["session.deleted"] = "session.deleted"
    deleted: bool = True


class DocumentIn(Wire):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    text: str


class DocumentsIn(Wire):
    documents: Annotated[list[DocumentIn], Field(min_length=1, max_length=1024)]


class DocumentOut(BaseModel):
    id: str
    object: Literal["document"] = "document"
    name: str
    bytes: int
    chunks: int


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]


class DocumentDeleted(BaseModel):
    id: str
    object: Literal["document.deleted"] = "document.deleted"
    deleted: bool = True

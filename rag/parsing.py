"""Documents to text, in memory: plain text and Markdown as UTF-8, PDF with pypdf, DOCX with
python-docx. Both libraries read from a BytesIO; nothing touches a file."""

from __future__ import annotations

import io
from pathlib import PurePosixPath

from rag.errors import ParseError, UnsupportedFormat

_TEXT_TYPES = {"text/plain", "text/markdown", "text/x-markdown"}
_PDF_TYPES = {"application/pdf"}
_DOCX_TYPES = {"application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
_SUFFIXES = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".markdown": "text",
    ".pdf": "pdf",
    ".docx": "docx",
}


def kind_of(name: str, content_type: str | None) -> str:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _TEXT_TYPES:
        return "text"
    if media in _PDF_TYPES:
        return "pdf"
    if media in _DOCX_TYPES:
        return "docx"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if media in ("", "application/octet-stream"):
        return "text"
    raise UnsupportedFormat("documents must be text, Markdown, PDF or DOCX")


def to_text(name: str, content_type: str | None, data: bytes) -> str:
    kind = kind_of(name, content_type)
    if kind == "pdf":
        return _pdf(data)
    if kind == "docx":
        return _docx(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("a text document is not valid UTF-8") from None


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError):
        raise ParseError("the PDF could not be parsed") from None


def _docx(data: bytes) -> str:
    import zipfile

    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError):
        raise ParseError("the DOCX could not be parsed") from None
    return "\n".join(paragraph.text for paragraph in document.paragraphs)

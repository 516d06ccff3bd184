"""Documents to text, in memory: plain text and Markdown as UTF-8, PDF with pypdf, DOCX with
python-docx. Both libraries read from a BytesIO; nothing touches a file.

Invariant: a document's size limit applies to what it expands to, not only to its bytes. A
DOCX's ZIP members are measured (declared sizes, then actual ones through a reader that stops
at the limit) before python-docx inflates any of them; a PDF's pages are counted before any is
read; and extracted text is counted as it is produced.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from rag.errors import DocumentTooLarge, ParseError, UnsupportedFormat


@dataclass(frozen=True)
class ParseLimits:
    max_unzipped_bytes: int = 32 << 20
    max_text_chars: int = 8 << 20
    max_pdf_pages: int = 2000


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


def to_text(
    name: str, content_type: str | None, data: bytes, limits: ParseLimits | None = None
) -> str:
    limits = limits or ParseLimits()
    kind = kind_of(name, content_type)
    if kind == "pdf":
        return _pdf(data, limits)
    if kind == "docx":
        return _docx(data, limits)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("a text document is not valid UTF-8") from None
    _TextBudget(limits, 0).add(text)
    return text


class _TextBudget:
    """Characters of extracted text so far, the separators that will join the parts included."""

    def __init__(self, limits: ParseLimits, separator: int) -> None:
        self.limit = limits.max_text_chars
        self.separator = separator
        self.used = -separator

    def add(self, text: str) -> None:
        self.used += self.separator + len(text)
        if self.used > self.limit:
            raise DocumentTooLarge(f"a document's text may be at most {self.limit} characters")


def _pdf(data: bytes, limits: ParseLimits) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    budget = _TextBudget(limits, 2)
    parts = []
    try:
        reader = PdfReader(io.BytesIO(data))
        too_many = DocumentTooLarge(f"a PDF may have at most {limits.max_pdf_pages} pages")
        pages: Any = reader.trailer["/Root"]["/Pages"]  # type: ignore[index]
        declared = pages.get("/Count", 0)
        if not isinstance(declared, int) or declared > limits.max_pdf_pages:
            raise too_many  # read in O(1): counting the page tree walks all of it
        if len(reader.pages) > limits.max_pdf_pages:  # the declared count may lie
            raise too_many
        for page in reader.pages:
            parts.append(page.extract_text() or "")
            budget.add(parts[-1])
    except (PyPdfError, ValueError, KeyError, TypeError, OSError):
        raise ParseError("the PDF could not be parsed") from None
    return "\n\n".join(parts)


def _check_zip(data: bytes, limits: ParseLimits) -> None:
    """Raise unless the archive's members, inflated, fit `max_unzipped_bytes`."""
    limit = limits.max_unzipped_bytes
    too_large = DocumentTooLarge(f"a DOCX may expand to at most {limit} bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if sum(info.file_size for info in infos) > limit:
                raise too_large
            total = 0
            for info in infos:  # the declared sizes may lie: count what inflates
                with archive.open(info) as member:
                    while block := member.read(1 << 16):
                        total += len(block)
                        if total > limit:
                            raise too_large
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError):
        raise ParseError("the DOCX could not be parsed") from None
    except NotImplementedError:  # a compression method zipfile does not have
        raise ParseError("the DOCX could not be parsed") from None


def _docx(data: bytes, limits: ParseLimits) -> str:
    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    _check_zip(data, limits)
    try:
        document = Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError):
        raise ParseError("the DOCX could not be parsed") from None
    budget = _TextBudget(limits, 1)
    parts = []
    for paragraph in document.paragraphs:
        parts.append(paragraph.text)
        budget.add(parts[-1])
    return "\n".join(parts)

import gc
import io
import time
import zipfile
from collections.abc import Callable

import psutil
import pytest
from docx import Document
from pypdf import PdfWriter

from rag.errors import DocumentTooLarge, ParseError, UnsupportedFormat
from rag.parsing import ParseLimits, to_text


def minimal_pdf(text: str, padding: int = 0) -> bytes:
    """A one-page PDF with one line of text, written out by hand (no PDF writer needed).
    `padding` adds an unreferenced binary stream of that many bytes: size without text."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    if padding:
        blob = bytes(range(256)) * (padding // 256 + 1)
        objects.append(b"<< /Length %d >>\nstream\n" % len(blob) + blob + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def docx_bytes(*paragraphs: str) -> bytes:
    document = Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_text_and_markdown_are_utf8() -> None:
    assert to_text("a.md", None, "# Tëst".encode()) == "# Tëst"
    assert to_text("a", "text/plain; charset=utf-8", b"plain") == "plain"


def test_pdf_is_parsed_in_memory() -> None:
    assert "Zorblax 1987" in to_text("r.pdf", "application/pdf", minimal_pdf("Zorblax 1987"))


def test_docx_is_parsed_in_memory() -> None:
    text = to_text("r.docx", None, docx_bytes("First paragraph.", "Second one."))
    assert text.splitlines() == ["First paragraph.", "Second one."]


@pytest.mark.parametrize(
    ("name", "content_type", "data"),
    [
        ("bad.txt", "text/plain", b"\xff\xfe\xfa"),
        ("bad.pdf", "application/pdf", b"%PDF-1.4 this is not a pdf"),
        ("bad.docx", None, b"PK not a zip"),
    ],
)
def test_broken_documents_are_parse_errors(
    name: str, content_type: str | None, data: bytes
) -> None:
    with pytest.raises(ParseError):
        to_text(name, content_type, data)


def test_other_formats_are_refused() -> None:
    with pytest.raises(UnsupportedFormat):
        to_text("x.png", "image/png", b"\x89PNG")


def docx_bomb(text_bytes: int, *, run: int = 1000, fill: str = "a") -> bytes:
    """A real DOCX whose document.xml repeats one run until it holds `text_bytes` of text:
    a few hundred KB that inflate to tens of MB. Each run is `fill` repeated."""
    source = zipfile.ZipFile(io.BytesIO(docx_bytes("seed")))
    xml = source.read("word/document.xml").decode()
    head, tail = xml.split("<w:body>", 1)
    runs = ("<w:r><w:t>" + (fill * run)[: run - 1] + " </w:t></w:r>") * (text_bytes // run)
    body = f"{head}<w:body><w:p>{runs}</w:p>{tail}"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
        for info in source.infolist():
            data = body.encode() if info.filename == "word/document.xml" else source.read(info)
            bomb.writestr(info.filename, data)
    return out.getvalue()


def many_pages_pdf(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=72, height=72)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def bounded(fn: Callable[[], object]) -> tuple[float, int]:
    """Seconds and RSS growth (bytes) of `fn`, which must raise DocumentTooLarge."""
    gc.collect()
    rss = psutil.Process().memory_info().rss
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge):
        fn()
    return time.monotonic() - started, psutil.Process().memory_info().rss - rss


def test_a_docx_bomb_is_refused_by_its_declared_size() -> None:
    bomb = docx_bomb(60 << 20)
    assert len(bomb) < 1 << 20
    seconds, grown = bounded(lambda: to_text("b.docx", None, bomb))
    assert seconds < 1.0
    assert grown < 100 << 20


def test_a_docx_whose_sizes_lie_is_refused_by_what_inflates() -> None:
    bomb = bytearray(docx_bomb(8 << 20))
    # Rewrite every declared size (local headers and central directory) to 1 KiB.
    archive = zipfile.ZipFile(io.BytesIO(bytes(bomb)))
    for info in archive.infolist():
        if info.file_size > 1024:
            for at in range(len(bomb) - 4):
                if bomb[at : at + 4] == info.file_size.to_bytes(4, "little"):
                    bomb[at : at + 4] = (1024).to_bytes(4, "little")
    with pytest.raises(ParseError):  # zipfile stops at the declared size; the CRC fails
        to_text("b.docx", None, bytes(bomb), ParseLimits(max_unzipped_bytes=1 << 20))


def test_text_and_pages_are_counted_as_they_are_extracted() -> None:
    limits = ParseLimits(max_unzipped_bytes=64 << 20, max_text_chars=100_000, max_pdf_pages=50)
    bomb, pdf = docx_bomb(1 << 20), many_pages_pdf(5000)
    seconds, grown = bounded(lambda: to_text("b.docx", None, bomb, limits))
    assert seconds < 1.0
    assert grown < 100 << 20
    seconds, grown = bounded(lambda: to_text("p.pdf", None, pdf, limits))
    assert seconds < 1.0
    assert grown < 100 << 20
    with pytest.raises(DocumentTooLarge, match="100000 characters"):
        to_text("a.txt", None, b"x" * 100_001, limits)
    assert to_text("a.txt", None, b"x" * 100_000, limits)
    assert to_text("p.pdf", None, many_pages_pdf(50), limits) == "\n\n".join([""] * 50)

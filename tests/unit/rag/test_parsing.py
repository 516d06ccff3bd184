import io

import pytest
from docx import Document

from rag.errors import ParseError, UnsupportedFormat
from rag.parsing import to_text


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

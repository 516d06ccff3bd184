"""multipart/form-data parsed from an in-memory body, with every part kept in memory.

Starlette's form parser spools parts over 1 MiB to a temporary file. Keep never does: the
body is already in memory (BodyLimit read it), and python-multipart's push parser hands
each part's bytes to callbacks that append them to a bytearray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from appliance.errors import InvalidRequest

MAX_PARTS = 1024


@dataclass
class Part:
    # Header values as latin-1, which maps every byte and loses none: a filename in UTF-8
    # (as browsers and httpx send it) is decoded from those bytes by `filename`.
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    @property
    def filename(self) -> str | None:
        return self._disposition().get("filename")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def _disposition(self) -> dict[str, str]:
        _, params = parse_options_header(self.headers.get("content-disposition", ""))
        return {k.decode("latin-1"): v.decode("utf-8", "replace") for k, v in params.items()}


def parse(content_type: str, body: bytes) -> list[Part]:
    media, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise InvalidRequest("expected multipart/form-data with a boundary")
    parts: list[Part] = []
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise InvalidRequest(f"at most {MAX_PARTS} parts are accepted")
        parts.append(Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        key = header_field.decode("latin-1").lower()
        parts[-1].headers[key] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise InvalidRequest("the multipart body could not be parsed") from None
    return parts

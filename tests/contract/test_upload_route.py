"""The one path two planes must agree on: the document upload route, the only one where the
appliance and NGINX both take bodies up to KEEP_RAG_MAX_UPLOAD_BYTES. The appliance's router
defines it (UPLOAD_ROUTE); NGINX's template spells it as a regular expression; this ties them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.routing import Route

from appliance.app import create_app
from appliance.keep_api.documents import UPLOAD_ROUTE
from keep.settings import load_settings
from provisioning import nginx
from tests.conftest import AppFactory


def _settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_settings(
        state_dir=tmp_path / "state",
        wg_interface="keep0",
        wg_subnet="198.51.100.0/24",
        listen_socket=tmp_path / "api.sock",
        nginx_dir=tmp_path / "nginx",
        nginx_runtime_dir=tmp_path / "run",
        max_body_bytes=1 << 20,
        rag_max_upload_bytes=7 << 20,
    )


def _regex_locations(conf: str) -> dict[str, str]:
    """Each `location ~ REGEX { ... }` of the API's server block, with its block's text."""
    found = {}
    for match in re.finditer(r"location ~ (\S+) \{(.*?)\n\s*\}", conf, re.S):
        found[match.group(1)] = match.group(2)
    return found


def _paths(routes: list[Any]) -> list[str]:
    """Every route's path, through the routers the app includes."""
    paths = []
    for route in routes:
        if isinstance(route, Route):
            paths.append(route.path)
        inner = getattr(route, "original_router", None) or getattr(route, "routes", None)
        if inner is not None and not isinstance(route, Route):
            paths += _paths(list(getattr(inner, "routes", inner)))
    return paths


def _sample(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "sess-0123456789abcdef01234567", path)


def test_nginx_upload_location_is_the_routers_upload_route_and_no_other(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    conf = nginx.render(settings.perimeter, tmp_path / "api.sock")
    locations = _regex_locations(conf)
    assert len(locations) == 1, locations
    ((pattern, block),) = locations.items()
    assert f"client_max_body_size {7 << 20};" in block
    routes = _paths(create_app(settings.appliance).routes)
    assert UPLOAD_ROUTE in routes
    assert re.fullmatch(pattern, _sample(UPLOAD_ROUTE))
    others = [path for path in routes if path != UPLOAD_ROUTE]
    assert others, routes
    for path in others:
        assert not re.fullmatch(pattern, _sample(path)), path
        assert not re.fullmatch(pattern, _sample(path) + "/x"), path


def test_the_appliance_takes_upload_sized_bodies_only_on_the_upload_route(
    make_client: AppFactory,
) -> None:
    client = make_client(max_body_bytes=1 << 20, rag_max_upload_bytes=7 << 20)
    body = b"x" * ((1 << 20) + 1)  # over KEEP_MAX_BODY_BYTES, under the upload limit
    elsewhere = client.post("/v1/embeddings", content=body)
    upload = client.post(UPLOAD_ROUTE.format(session_id="sess-x"), content=body)
    assert elsewhere.status_code == 413
    assert upload.status_code != 413
    assert upload.json()["error"]["type"]  # refused for what it is, in the API's shape

"""Print each of Keep's packages with the packages it imports (grimp, as import-linter sees
them), for docs/architecture.md's map. Usage: .venv/bin/python scripts/import_graph.py"""

from __future__ import annotations

import sys

import grimp

PACKAGES = (
    "keep",
    "appliance",
    "inference",
    "rag",
    "transparency",
    "durable",
    "control",
    "provisioning",
    "lab",
)


def node(module: str) -> str:
    """A package, except that keep's parts are drawn apart: the command composes the planes,
    the settings are a leaf they read (`python -m keep` is the command)."""
    parts = module.split(".")
    if parts[0] != "keep" or len(parts) == 1:
        return parts[0]
    return "keep.cli" if parts[1] == "__main__" else f"keep.{parts[1]}"


def main() -> None:
    present = [p for p in PACKAGES if _importable(p)]
    graph = grimp.build_graph(*present, include_external_packages=False)
    edges: dict[str, set[str]] = {}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = node(importer), node(imported)
            if a != b:
                edges.setdefault(a, set()).add(b)
        edges.setdefault(node(importer), set())
    for name in sorted(edges):
        print(f"{name:<16} -> {', '.join(sorted(edges[name])) or '(nothing of Keep)'}")


def _importable(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


if __name__ == "__main__":
    sys.exit(main())

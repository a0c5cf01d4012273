"""MkDocs hook: the API reference is generated from the app's own OpenAPI document at build time.

``on_files`` builds the app (a throw-away SQLite database and keyring in a temporary folder, the
repository's ``policies/``), takes ``app.openapi_schema`` and adds two generated files to the site:
``api/openapi.json`` (the document, byte for byte what ``/schema/openapi.json`` serves) and
``api/reference.md`` (every operation with who may call it, its parameters, body and answers, then
every schema). Nothing is written into ``docs/``, and nothing is fetched from the network.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "post", "put", "patch", "delete")
_PATH_PARAM = re.compile(r"\{(\w+):[^}]+\}")


def build_document() -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, Any]]]:
    """The OpenAPI document and each operation's access declaration (the route's ``opt``)."""
    from litestar.serialization import encode_json

    with tempfile.TemporaryDirectory(prefix="privacy-docs-") as tmp:
        env = {
            "PRIVACY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/docs.db",
            "PRIVACY_KEYRING_PATH": f"{tmp}/keyring.json",
            "PRIVACY_POLICY_DIR": str(ROOT / "policies"),
            # Whatever a developer's .env says: the document does not depend on where keys live.
            "PRIVACY_KEY_PROVIDER": "local",
            "PRIVACY_BLIND_INDEX_KEY_SOURCE": "keyring",
            "PRIVACY_LOG_LEVEL": "WARNING",
        }
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            from privacy_service.app import create_app
            from privacy_service.config import load_settings
            from privacy_service.runtime import build_runtime

            app = create_app(runtime=build_runtime(load_settings(), create_keyring=True))
            document = json.loads(encode_json(app.openapi_schema.to_schema()))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    access: dict[tuple[str, str], dict[str, Any]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            for method in getattr(handler, "http_methods", ()):
                access[(_PATH_PARAM.sub(r"{\1}", route.path), method.lower())] = dict(handler.opt)
    return document, access


def describe_access(opt: dict[str, Any]) -> str:
    parts = []
    if opt.get("public"):
        parts.append("public (no credential)")
    if opt.get("subject_token"):
        parts.append("the request's own token (`psr_...`)")
    if opt.get("scopes"):
        parts.append("operator key with " + ", ".join(f"`{scope}`" for scope in sorted(opt["scopes"])))
    if opt.get("credential"):
        parts.append(f"its own credential ({opt['credential']})")
    if opt.get("pii"):
        parts.append("answers decrypted personal data")
    return "; ".join(parts) or "-"


def anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{anchor(name)})"
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(type_of(option) for option in schema[key])
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and not schema.get("properties"):
        values = schema["additionalProperties"]
        return f"object of {type_of(values)}" if values else "object"
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)


def cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def render(document: dict[str, Any], access: dict[tuple[str, str], dict[str, Any]]) -> str:
    info = document["info"]
    out = [
        "# API reference",
        "",
        f"Generated at build time from the OpenAPI document of **{info['title']} {info['version']}** "
        "(the same document the service serves at `/schema/openapi.json`; a copy of it: "
        "[openapi.json](openapi.json)). Conventions (authentication, errors, request ids) are in "
        "the [API overview](index.md). Every error answer is `application/problem+json` "
        f"([Problem](#{anchor('Problem')})).",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                by_tag.setdefault((operation.get("tags") or ["other"])[0], []).append((path, method, operation))
    for tag in sorted(by_tag):
        out += [f"## {tag}", ""]
        for path, method, operation in sorted(by_tag[tag], key=lambda op: (op[0], METHODS.index(op[1]))):
            out += [f"### `{method.upper()} {path}`", ""]
            if operation.get("summary"):
                out += [operation["summary"], ""]
            if operation.get("description"):
                out += [operation["description"], ""]
            out += [f"**Access:** {describe_access(access.get((path, method), {}))}", ""]
            if operation.get("parameters"):
                out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
                for parameter in operation["parameters"]:
                    out.append(
                        f"| `{parameter['name']}` | {parameter['in']} | {type_of(parameter.get('schema', {}))} | "
                        f"{'yes' if parameter.get('required') else 'no'} | {cell(parameter.get('description'))} |"
                    )
                out.append("")
            body = operation.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                out += [f"**Body** (`{media}`): {type_of(content.get('schema', {}))}", ""]
            out += ["| status | answer |", "|---|---|"]
            for status, response in operation.get("responses", {}).items():
                kinds = [
                    f"`{media}` {type_of(content.get('schema', {}))}".strip()
                    for media, content in response.get("content", {}).items()
                ]
                answer = cell(response.get("description")) + (": " + ", ".join(kinds) if kinds else "")
                out.append(f"| {status} | {answer} |")
            out.append("")
    out += ["## Schemas", ""]
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        out += [f"### {name} {{#{anchor(name)}}}", ""]
        if schema.get("description"):
            out += [schema["description"], ""]
        properties = schema.get("properties")
        if not properties:
            out += [f"Type: {type_of(schema)}", ""]
            continue
        required = set(schema.get("required", ()))
        out += ["| field | type | required | description |", "|---|---|---|---|"]
        for field, spec in properties.items():
            needed = "yes" if field in required else "no"
            out.append(f"| `{field}` | {type_of(spec)} | {needed} | {cell(spec.get('description'))} |")
        out.append("")
    return "\n".join(out)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    document, access = build_document()
    files.append(File.generated(config, "api/openapi.json", content=json.dumps(document, indent=2) + "\n"))
    files.append(File.generated(config, "api/reference.md", content=render(document, access)))
    return files

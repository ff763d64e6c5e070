"""The configuration reference (`docs/configuration.md`), generated from the typed config itself.

Each section's docstring and each key's type, default, bounds and `#:` comment come from
:mod:`pipeline.core.config`, so the reference cannot drift from the code: `python -m pipeline.core.reference`
writes the page, `--check` fails when the committed page is stale (a test runs it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pipeline.core import config as config_module

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

INTRO = """# Configuration reference

Generated from `pipeline/core/config.py` by `python -m pipeline.core.reference`; do not edit by hand.

A run is configured by one YAML file (`--config`, e.g. `configs/demo.yaml`) plus `--set a.b=c` overrides,
whose values are parsed as YAML scalars (`--set train.epochs=3`, `--set tune.families=[db,bce]`). Every key
below has a default; unknown keys and out-of-range values are errors before any work starts.
`best_params.yaml` written by Tune uses the same keys (`jobs.train --params`).
"""


def _comments(cls: type) -> dict[str, str]:
    """`#:` comment lines directly above each field of a class body, joined into one paragraph."""
    lines, _ = inspect.getsourcelines(cls)
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            continue
        if pending and ":" in text and not text.startswith(("def ", "@", "class ", '"""')):
            name = text.split(":", 1)[0].strip()
            if name.isidentifier():
                found[name] = " ".join(pending)
        pending = []
    return found


def _type(hint: Any) -> str:
    """A type as a user writes it in YAML: `int`, `str or null`, `"cls" | "mean"`, `list[str]`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [_type(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    return getattr(hint, "__name__", str(hint))


def _bounds(info: Any) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def _default(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return ""
    return f"`{json.dumps(value, default=str)}`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _section(prefix: str, cls: type[BaseModel], out: list[str]) -> None:
    hints = typing.get_type_hints(cls, vars(config_module))
    comments = _comments(cls)
    nested: list[tuple[str, type[BaseModel]]] = []
    rows = []
    for name, info in cls.model_fields.items():
        hint = hints.get(name, info.annotation)
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            nested.append((f"{prefix}.{name}" if prefix else name, hint))
            continue
        bounds = _bounds(info)
        rows.append(
            f"| `{name}` | {_type(hint)}{f' ({bounds})' if bounds else ''} | {_escape(_default(info))} "
            f"| {_escape(comments.get(name, ''))} |"
        )
    if prefix:
        out.append(f"## `{prefix}`\n")
        doc = inspect.getdoc(cls)
        if doc and cls.__doc__ is not None and "__doc__" in vars(cls):
            out.append(doc + "\n")
        if rows:
            out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |", *rows, ""]
    for name, sub in nested:
        _section(name, sub, out)


def render() -> str:
    out = [INTRO]
    _section("", config_module.Config, out)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or check) docs/configuration.md from the config.")
    parser.add_argument("--check", action="store_true", help="fail if the committed page is out of date")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE} is out of date: run python -m pipeline.core.reference", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

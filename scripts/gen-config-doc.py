"""Regenerate the key table in docs/config.md from the config schema.

Usage: .venv/bin/python scripts/gen-config-doc.py
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

from raibid.config import env_var_for, schema_keys

DOC = Path(__file__).parents[1] / "docs" / "config.md"


def rows() -> list[str]:
    out = []
    for path, tp, f in schema_keys():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        env = "(file only)" if typing.get_origin(tp) is dict else f"`{env_var_for(path)}`"
        out.append(f"| `{'.'.join(path)}` | `{json.dumps(default)}` | {env} | {f.metadata.get('help', '')} |")
    return out


def main() -> None:
    table = "\n".join(["| Key | Default | Env override | Meaning |", "|---|---|---|---|", *rows()])
    text = DOC.read_text()
    new = re.sub(r"(<!-- keys:begin -->\n).*?(<!-- keys:end -->)", lambda m: m.group(1) + table + "\n" + m.group(2),
                 text, flags=re.S)
    DOC.write_text(new)


if __name__ == "__main__":
    main()

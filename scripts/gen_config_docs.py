"""Regenerate the variable table of docs/configuration.md from the Settings object.

python scripts/gen_config_docs.py          # rewrite the table in place
python scripts/gen_config_docs.py --check  # exit 1 if the doc is out of date (CI)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.settings import Settings  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"


def _type(annotation: object) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    for noise in ("typing.", "pathlib.", "pydantic.types."):
        text = text.replace(noise, "")
    return text.replace("NoneType", "None").replace(" | None", ", optional").replace("|", "or")


def _default(value: object) -> str:
    if value is None or value is PydanticUndefined:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"


def table() -> str:
    lines = ["| variable | type | default | what it does |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = " ".join((field.description or "").split()).replace("|", "\\|").replace("``", "`")
        lines.append(f"| `{name.upper()}` | {_type(field.annotation)} | {_default(field.default)} | {description} |")
    return "\n".join(lines)


def render(current: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if wanted != current:
            print("docs/configuration.md is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

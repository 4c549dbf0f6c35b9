"""The tables the CLI prints (`webauthn list`, `policy list`): aligned columns, and nothing
a terminal would obey.

Cells hold what users, clients and policy authors chose (a passkey name, a policy's
hosts). A control character in one could clear the screen (``ESC [2J``), move the cursor
or forge whole rows (``CR LF``); each non-printable character is shown as its Python
escape instead (``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``), so one record is one line.
"""

from __future__ import annotations

from collections.abc import Sequence


def printable(text: str) -> str:
    """``text`` with every non-printable character written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as left-aligned columns two spaces apart."""
    shown = [[printable(cell) for cell in row] for row in rows]
    if not shown:
        return ""
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in shown)

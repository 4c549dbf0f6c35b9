"""CLI tables show every cell on its own row, with nothing a terminal would obey."""

from __future__ import annotations

import pytest

from extauthz.policy.cli import _table as policy_table
from extauthz.table import format_table, printable


@pytest.mark.parametrize(("raw", "shown"), [
    ("laptop", "laptop"),
    ("Clé USB — bureau", "Clé USB — bureau"),  # printable non-ASCII stays as it is
    ("\x1b[2J", "\\x1b[2J"),
    ("a\r\nb", "a\\r\\nb"),
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # a bidi override would reverse the rest
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("tab\there", "tab\\there"),
    ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),  # NUL, DEL and the 8-bit CSI
])
def test_non_printable_characters_are_shown_as_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_a_table_is_one_line_per_row_and_aligned_on_the_escaped_text() -> None:
    text = format_table([["NAME", "ID"], ["\x1b[2J\r\nFORGED", "c1"], ["ok", "c2"]])
    assert text.splitlines() == ["NAME               ID",
                                 "\\x1b[2J\\r\\nFORGED  c1",
                                 "ok                 c2"]


def test_the_policy_table_escapes_its_cells_too() -> None:
    text = policy_table([["p", "*", "regex:/a\x1b[2J\r\nx", "*", "allow", "enforce"]])
    assert "\x1b" not in text
    assert len(text.splitlines()) == 2

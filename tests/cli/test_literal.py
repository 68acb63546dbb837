"""Remote text reaches the terminal as it is: no Rich markup, no escape sequences, no hidden characters."""

from __future__ import annotations

import io
import re

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from kosmesh.cli.literal import bold, cells, escape_unsafe, line, literal

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def rendered(*objects: object) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100_000, color_system=None, emoji=False, force_terminal=False)
    console.print(*objects, soft_wrap=True, end="")
    return buffer.getvalue()


@given(st.text())
def test_any_text_is_shown_as_it_is_with_unsafe_characters_spelt_out(text: str) -> None:
    shown = rendered(literal(text))
    assert shown == escape_unsafe(text)
    assert UNSAFE.search(shown) is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))))
def test_safe_text_is_unchanged_markup_included(text: str) -> None:
    assert rendered(literal(text)) == text


def test_markup_escapes_and_bidi_are_shown_not_obeyed() -> None:
    assert rendered(literal("[/x] [bold red]boom[/] :smile:")) == "[/x] [bold red]boom[/] :smile:"
    assert rendered(literal("\x1b]0;title\x07\x1b[2J")) == "\\x1b]0;title\\x07\\x1b[2J"
    assert rendered(literal("a\u202eb\u200bc\nd\te")) == "a\\u202eb\\u200bc\\x0ad\\x09e"
    assert rendered(literal(12.5)) == "12.5"
    assert rendered(line(bold("Reason:"), " ", "[/reason]")) == "Reason: [/reason]"


def test_table_cells_are_literal() -> None:
    table = Table()
    table.add_column("capabilities")
    table.add_row(*cells("[/x], [link=https://evil.example]click[/link]\x1b[2J"))
    shown = rendered(table)
    assert "[/x], [link=https://evil.example]click[/link]\\x1b[2J" in shown and "\x1b" not in shown

"""Text from elsewhere, shown exactly as it is: never read as Rich markup, never sent raw to the terminal.

A remote peer chooses its role, capabilities, agent names, reasons and results. Printed as a
Rich string, ``[/x]`` raises a markup error (``kosmesh peers`` failed for good once a peer had
declared it) and ``[link=…]`` or ``[blink]`` restyle the output; printed raw, an escape sequence
moves the cursor, rewrites earlier lines or sets the window title, and bidi or zero-width
characters make one string look like another. :func:`literal` returns a :class:`rich.text.Text`
(no markup, no emoji codes, no highlighting) with such characters spelt out as ``\\xNN`` /
``\\uNNNN``. Every string the CLI did not write itself goes through it, local ones too: one rule
is easier to check than a list of which fields a peer can reach.
"""

from __future__ import annotations

import re

from rich.text import Text

# C0 and C1 controls and DEL (escape sequences, line breaks, tabs), and the invisible format
# characters that reorder or hide text: soft hyphen, Arabic letter mark, Mongolian vowel
# separator, zero-width and directional marks, line/paragraph separators, bidi embeddings,
# overrides and isolates, word joiner and invisible operators, BOM, interlinear annotations.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def _spell_out(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_unsafe(text: str) -> str:
    """``text`` with control and invisible format characters spelt out (``\\x1b``, ``\\u202e``)."""
    return _UNSAFE.sub(_spell_out, text)


def literal(value: object, style: str = "") -> Text:
    """``value`` as terminal-safe text that Rich renders literally (``str()`` of non-strings)."""
    return Text(escape_unsafe(value if isinstance(value, str) else str(value)), style=style)


def line(*parts: object) -> Text:
    """One line from parts: :class:`Text` parts keep their style, everything else is :func:`literal`."""
    return Text.assemble(*(part if isinstance(part, Text) else literal(part) for part in parts))


def bold(label: str) -> Text:
    """A label of our own, in bold."""
    return Text(label, style="bold")


def cells(*values: object) -> list[Text]:
    """A table row's cells, each :func:`literal`."""
    return [literal(v) for v in values]

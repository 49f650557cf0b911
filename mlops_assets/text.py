"""Data shown on a terminal: every character that is not printable is shown as an escape.

A feed value or a decrypted identifier can hold an escape sequence (ESC ``[2J``, an OSC 8
hyperlink, a title change), a carriage return that hides what came before, or a bidirectional
override that reorders what the reader sees. :func:`printable` shows such characters as Python
string escapes (``\\x1b``, ``\\u202e``) so the terminal only ever receives text. Tabs and line
breaks are escaped too (``\\t``, ``\\n``, ``\\r``): one value stays one line, and a stray tab
in a feed is visible. A backslash is doubled, so the shown text maps back to exactly one value.
"""

from __future__ import annotations

_SHORT = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character that ``str.isprintable`` rejects (controls, format and
    separator characters other than the space, unassigned code points) and the backslash
    shown as an escape."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape(c) for c in text)


def printable_lines(text: str) -> str:
    """:func:`printable` line by line, the line breaks kept: for messages that quote data."""
    return "\n".join(map(printable, text.splitlines()))

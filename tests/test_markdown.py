"""Markdown metadata: data shown in the Dagster UI renders as its text, never as markup."""

import re

import pytest

from mlops_assets.markdown import md_list, md_table, md_text

HOSTILE = [
    "[click me](https://evil.example/phish)",
    "![x](https://evil.example/beacon.png)",
    "<img src=https://evil.example/beacon.png>",
    "`code` *bold* _em_ ~~gone~~ # heading",
    "a | b",
    "line\nbreak\r\x1b[2J\u202eevil",
    "back\\slash",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_text_leaves_no_markdown_punctuation_unescaped(text):
    escaped = md_text(text)
    # Every markdown character is preceded by an escaping backslash (pairs of backslashes are
    # literal backslashes), and no control or format character is left.
    unescaped = re.sub(r"\\.", "", escaped)
    assert not set(unescaped) & set("\\`*_[]()!<>|#~")
    assert all(c.isprintable() for c in escaped)


def test_md_text_renders_back_to_the_text():
    # Undoing the markdown escapes gives the text with control characters shown as escapes.
    escaped = md_text("a [b](c) \\ \n")
    assert re.sub(r"\\(.)", r"\1", escaped) == "a [b](c) \\\\ \\n"


def test_md_table_escapes_every_cell_and_keeps_its_shape():
    table = md_table(("file", "n"), [("[x](http://e/)", 1), ("a|b\nc", 2)])
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2] == "| \\[x\\]\\(http://e/\\) | 1 |"
    assert lines[3] == "| a\\|b\\\\nc | 2 |"


def test_md_list_escapes_items():
    assert md_list([]) == "none"
    assert md_list(["![i](http://e/i.png)"]) == "- \\!\\[i\\]\\(http://e/i.png\\)"


@pytest.mark.parametrize("text", HOSTILE)
def test_the_terminal_gets_the_text_back_without_markdown_escapes(text):
    # The run summary prints what a failed check's markdown says: as the text, control
    # characters still shown escaped, no backslashes added for markdown.
    import dagster as dg

    from mlops_assets.run.report import describe
    from mlops_assets.text import printable

    metadata = {"failed_files": dg.MetadataValue.md(md_list([text]))}
    assert describe(metadata) == "- " + printable(text)

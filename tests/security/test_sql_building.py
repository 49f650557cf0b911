"""No f-string puts untrusted text into SQL (the trust boundary in the docs).

SQL text in ``mlops_assets/`` interpolates only what cannot carry an attacker's text:

* a call to the quoting helpers of ``mlops_assets.sql`` (``ident``, ``qualified``, ``literal``,
  ``idents``);
* a module constant (``UPPER_CASE``), fixed by the code;
* a number (``int(...)``/``float(...)``, or ``len(...)``);
* a variable or function named ``*_sql``: a fragment of SQL that was itself built by these rules
  (the convention makes every such fragment visible to review, and its own f-strings are checked
  here too).

Everything else — a column name, a file path, a value — goes through a helper or a ``?``
parameter. The check is structural (AST), so it cannot be fooled by formatting; it errs towards
flagging: a string that looks like SQL is checked even if it is only a message.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mlops_assets

PACKAGE = Path(mlops_assets.__file__).parent

SQL_TEXT = re.compile(
    r"^\s*(select|insert|update|delete|create|drop|copy|attach|alter|describe|pragma|with|"
    r"from|where|join|values|order by|group by|set|summarize)\b"
    r"|\bselect\b.*\bfrom\b|\binsert\s+into\b|\bdelete\s+from\b|\bcreate\s+(or\s+replace\s+)?"
    r"(temp\s+|temporary\s+)?(table|view|schema|sequence|macro)\b|\bdrop\s+(table|view|schema)\b"
    r"|\bcase\s+when\b|\balter\s+table\b|\bread_(csv|parquet|text|json)\w*\s*\(|\bupdate\s+\S+\s+set\b",
    re.IGNORECASE | re.DOTALL,
)
HELPERS = {"ident", "qualified", "table", "literal", "idents"}
NUMBERS = {"int", "float", "len"}


def _trusted(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id.isupper() or node.id.endswith("_sql")
    if isinstance(node, ast.Attribute):
        return node.attr.isupper() or node.attr.endswith("_sql")
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name in HELPERS or name in NUMBERS or name.endswith("_sql")
    if isinstance(node, ast.Subscript):  # a constant table of SQL fragments, e.g. KINDS[kind]
        return _trusted(node.value)
    return False


def untrusted_interpolations(source: str) -> list[tuple[int, str]]:
    """(line, expression) of every interpolation into SQL text that the rules do not allow."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.JoinedStr):
            continue
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        if not SQL_TEXT.search(text):
            continue
        for part in node.values:
            if isinstance(part, ast.FormattedValue) and not _trusted(part.value):
                found.append((node.lineno, ast.unparse(part.value)))
    return found


def test_no_untrusted_text_is_formatted_into_sql() -> None:
    offences = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {{{expression}}}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, expression in untrusted_interpolations(path.read_text())
    ]
    assert not offences, (
        "SQL built with an f-string interpolating text that is not quoted by mlops_assets.sql "
        "(use ident/qualified/literal, a ? parameter, or name a checked fragment *_sql):\n"
        + "\n".join(offences)
    )


def test_the_check_catches_what_it_must() -> None:
    # The injection of the loader's staging checks (a header name in a literal), a table name
    # from a spec, and a path in read_csv are caught; the quoted forms are not.
    assert untrusted_interpolations(
        "q = f\"case when contains({ident(c)}, chr(10)) then 'line break inside the value of {c}'"
        ' end"'
    ) == [(1, "c")]
    assert untrusted_interpolations('q = f"delete from raw.{spec.name} where a = 1"') == [
        (1, "spec.name")
    ]
    assert untrusted_interpolations("q = f\"create table t as select * from read_csv('{p}')\"")
    assert not untrusted_interpolations(
        "q = f\"delete from {qualified('raw', spec.name)} where {where_sql} limit {int(n)}\""
    )
    assert not untrusted_interpolations('message = f"{path}: could not be read"')

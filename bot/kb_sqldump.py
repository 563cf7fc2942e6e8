"""Read rows out of a MySQL dump (`INSERT INTO t VALUES (...),(...);`) without a MySQL server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

Value = str | int | float | None
INSERT = re.compile(r"INSERT INTO `?(\w+)`? (?:\([^)]*\) )?VALUES ")
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


class DumpError(ValueError):
    """The dump is not in the form mysqldump writes."""


def _scalar(token: str) -> Value:
    if token.upper() == "NULL":
        return None
    try:
        return int(token)
    except ValueError:
        try:
            return float(token)
        except ValueError as exc:
            raise DumpError(f"unexpected value {token[:40]!r}") from exc


def parse_values(sql: str, start: int = 0) -> Iterator[tuple[Value, ...]]:
    """The tuples of one `VALUES (...),(...);` list, from `start` to its closing `;`."""
    i, n = start, len(sql)
    while i < n:
        while i < n and sql[i] in " \n\r\t,":
            i += 1
        if i >= n or sql[i] == ";":
            return
        if sql[i] != "(":
            raise DumpError(f"expected '(' at {i}, found {sql[i : i + 20]!r}")
        i += 1
        row: list[Value] = []
        while True:
            while sql[i] in " \n\r\t":
                i += 1
            if sql[i] == "'":
                i += 1
                parts: list[str] = []
                while True:
                    j = sql.find("'", i)
                    k = sql.find("\\", i, j if j >= 0 else n)
                    if j < 0:
                        raise DumpError("unterminated string")
                    if k >= 0:  # a backslash escape before the next quote
                        parts.append(sql[i:k])
                        parts.append(_ESCAPES.get(sql[k + 1], sql[k + 1]))
                        i = k + 2
                    elif sql.startswith("''", j):  # '' is a quote too
                        parts.append(sql[i:j] + "'")
                        i = j + 2
                    else:
                        parts.append(sql[i:j])
                        i = j + 1
                        break
                row.append("".join(parts))
            else:
                m = re.compile(r"[^,)\s]+").match(sql, i)
                if m is None:
                    raise DumpError(f"bad value at {i}")
                row.append(_scalar(m.group(0)))
                i = m.end()
            while sql[i] in " \n\r\t":
                i += 1
            if sql[i] == ",":
                i += 1
                continue
            if sql[i] == ")":
                i += 1
                break
            raise DumpError(f"expected ',' or ')' at {i}, found {sql[i : i + 20]!r}")
        yield tuple(row)


def read_table(path: Path, table: str) -> Iterator[tuple[Value, ...]]:
    """Every row that the dump at `path` inserts into `table`."""
    sql = path.read_text(encoding="utf-8")
    found = False
    for m in INSERT.finditer(sql):
        if m.group(1) == table:
            found = True
            yield from parse_values(sql, m.end())
    if not found:
        raise DumpError(f"{path.name}: no INSERT INTO `{table}`")

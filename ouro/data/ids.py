"""Object ids read from files: one validator, used before any path is built from an id.

An id names a folder (``<render folder>/<uid>/``, ``<output>/objects/<name>/``, staging folders
``<uid>.<host>.<pid>``), so it must not be able to leave its parent: :data:`ID_PATTERN` allows
letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit (never ``.``/``..``, no
separators, no NUL), at most 128 characters. Ids come from kept lists (``ouro filter`` ->
``ouro train --kept``), held-out and ``eval-gso --objects`` lists, ``failures.jsonl`` and folder
names; Objaverse uids (32 hex digits) and GSO names are narrower patterns inside this one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["ID_PATTERN", "IdListError", "check_id", "is_safe_id", "read_id_list", "read_list_text"]

#: What an object id may look like: a single safe path component.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class IdListError(ValueError):
    """An id list that cannot be used; the message is one line naming the file (and line)."""


def is_safe_id(text: object) -> bool:
    """Whether ``text`` is a str matching :data:`ID_PATTERN` (so ``parent / text`` stays in ``parent``)."""
    return isinstance(text, str) and ID_PATTERN.fullmatch(text) is not None


def check_id(text: object, what: str = "id") -> str:
    """``text`` if :func:`is_safe_id`, else ``ValueError`` naming it (shortened to 80 characters)."""
    if not is_safe_id(text):
        shown = str(text)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ValueError(f"{what} {shown!r} is not a valid object id (letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 128 characters)")
    return text  # type: ignore[return-value]


def read_list_text(path: str | os.PathLike, label: str | None = None) -> str:
    """The whole text of a list file (UTF-8); ``label`` names it in messages (default the path).

    Raises:
        IdListError: the file is missing or cannot be read as UTF-8 text (one line, naming it).
    """
    label = label or str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IdListError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise IdListError(f"{label}: cannot read it as text ({type(e).__name__})") from None


def read_id_list(path: str | os.PathLike, *, label: str | None = None, what: str = "valid id",
                 pattern: re.Pattern[str] = ID_PATTERN,
                 hint: str = "letters, digits, '.', '_' and '-', starting with a letter or digit",
                 empty: str | None = "holds no ids (one per line)") -> list[str]:
    """Ids from a text file: one per line, ``#`` starts a comment, blank lines skipped, duplicates dropped.

    Args:
        path: the list.
        label: how messages name the list (e.g. ``"--objects x.txt"``); default the path.
        what: what a line should be, for the message (``"line 3 'x' is not a <what>"``).
        pattern: what an id must match in full; it must be at least as strict as :data:`ID_PATTERN`.
        hint: what a valid id looks like, for the message.
        empty: the message for a list without ids; None allows an empty list.

    Raises:
        IdListError: the file is missing or unreadable, a line is not an id (the first such line is
            named), or it holds no id.
    """
    path = Path(path)
    label = label or str(path)
    text = read_list_text(path, label)
    ids: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        if pattern.fullmatch(item) is None or not is_safe_id(item):
            shown = item if len(item) <= 60 else item[:57] + "..."
            raise IdListError(f"{label}: line {number} {shown!r} is not a {what} ({hint})")
        ids.append(item)
    if not ids and empty is not None:
        raise IdListError(f"{label}: {empty}")
    return list(dict.fromkeys(ids))

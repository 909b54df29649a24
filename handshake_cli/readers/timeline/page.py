"""The timeline page: the model (`readers/timeline`) in one self-contained HTML file.

The page is `page.html` (package data beside this module: its CSS and JavaScript
inline, a Content-Security-Policy that forbids every fetch) with the model embedded as JSON in
a `<script type="application/json">` element. Record text can hold anything, `</script>`
included, so the JSON is written with `<`, `>` and `&` (and U+2028/U+2029) escaped as
`\\u` sequences, which JSON.parse reads back as the same characters; the title is
HTML-escaped. Nothing is ever put into the page as markup by its script: it sets text.
"""

from __future__ import annotations

import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from handshake_cli import __version__
from handshake_cli.errors import UsageError
from handshake_cli.storage import durable

TEMPLATE = "page.html"
# What would end or confuse a script element, written as the JSON escapes of the same characters
# (str.replace: a translate table is ten times slower on a page of a hundred thousand records).
_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def embedded_json(value: Any) -> str:
    """`value` as JSON that is inert inside a script element. Text holding a lone surrogate
    (which UTF-8 cannot encode, as in the journal) is written with every non-ASCII character
    escaped instead."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    for char, escape in _ESCAPES:
        text = text.replace(char, escape)
    return text


def render(model: dict[str, Any]) -> str:
    """The page, as text."""
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    title = html.escape(str(model["session"].get("session_id", "")))
    head, marker, tail = template.partition("__DATA__")
    assert marker, "the template has no __DATA__ marker"
    head = head.replace("__TITLE__", title).replace("__VERSION__", html.escape(__version__))
    return head + embedded_json(model) + tail


def write_page(model: dict[str, Any], output: Path) -> int:
    """Write the page to `output` (replacing it: the page is a view, made again at will),
    atomically; its size in bytes."""
    output = output.expanduser().absolute()
    if output.is_dir():
        raise UsageError(
            f"{output} is a directory; give the page's file name (e.g. {output / 'session.html'})"
        )
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: {output.parent} is not a directory")
    body = render(model).encode("utf-8")
    tmp = durable.temp_path_for(output)
    try:
        fd = durable.create_file(tmp)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with durable.environment("write", output):
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            durable.fsync_fd(fd, path=output)
            os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    return len(body)

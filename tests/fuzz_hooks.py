"""Schemathesis hooks for tests/test_fuzz_api.py, loaded through ``SCHEMATHESIS_HOOKS``.

Schemathesis draws path and query values from each parameter's schema, mostly ASCII, and knows
no record that exists. Each value is drawn here from three sources instead: what Schemathesis
made, an identifier that exists on the server under test (so routes get past their 404s), and
hostile text (control characters, non-ASCII, astral characters, URL delimiters), alone or after
a valid value. ``FUZZ_KNOWN`` (JSON: parameter name to valid values) comes from the test.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

KNOWN: dict[str, list[str]] = json.loads(os.environ.get("FUZZ_KNOWN", "{}"))

#: Characters that broke, or could break, a route: C0 and C1 controls, NUL, a soft hyphen (the
#: signature that was a 500), bidi and byte-order marks, a non-character, astral emoji, and the
#: delimiters of paths and queries.
_SPECIAL = "\x00\x01\x08\t\n\r\x1b\x7f\x85\x9f\xa0\xad\xe9\xff\u0130\u202e\u2028\ufeff\uffff\U0001f3b5/\\?#%&=+;.~ "
#: Any character a URL can carry in UTF-8: lone surrogates cannot be encoded, so no client sends them.
_ANY = st.characters(codec="utf-8", exclude_categories=("Cs",))
HOSTILE = st.text(st.sampled_from(_SPECIAL) | _ANY, min_size=1, max_size=24).filter(
    lambda s: any(ord(c) < 0x20 or ord(c) >= 0x7F for c in s)
)


def _value(name: str, generated: Any, method: str) -> st.SearchStrategy[Any]:
    # Deleting the known file would take it from every later request, and in Schemathesis 4.32
    # a DELETE that succeeds also ends the fuzzing of that operation: DELETE gets none.
    known = [] if method == "DELETE" else [str(v) for v in KNOWN.get(name, [])]
    # Hostile first: Hypothesis favours the first branch early, before anything ends the operation's run.
    choices = [HOSTILE, st.just(generated)]
    if known:
        valid = st.sampled_from(known)
        choices += [valid, st.tuples(valid, HOSTILE).map("".join)]
    return st.one_of(choices)


def _params(
    context: schemathesis.HookContext, location: str, values: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Every parameter declared at ``location``, present or not in what Schemathesis made."""
    operation = context.operation
    names = [] if operation is None else [p.name for p in operation.iter_parameters() if p.location == location]
    method = "" if operation is None else operation.method.upper()
    values = dict(values or {})
    if not names and not values:
        return st.just(None)
    keys = sorted(set(names) | set(values))
    return st.fixed_dictionaries({key: _value(key, values.get(key), method) for key in keys}).map(
        lambda drawn: {k: v for k, v in drawn.items() if v is not None}
    )


@schemathesis.hook
def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> Any:
    return _params(context, "path", path_parameters)


@schemathesis.hook
def flatmap_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    return _params(context, "query", query)

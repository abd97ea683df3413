"""File references in a prediction's stored output.

The store keeps an output file as ``{FILE_REF: "<prediction id>/<name>"}`` wherever the model's
output put the file, and the API turns each into a URL for whoever asks; these walk any JSON
value (dicts, lists, scalars) for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

#: The key of a file reference; ``$`` keeps it apart from any key a model's output dict has.
FILE_REF = "$overture_file"

#: ``{FILE_REF: "<prediction id>/<name>"}``.
FileRef = dict[str, str]


def map_files(value: Any, fn: Callable[[FileRef], Any]) -> Any:
    """``value`` with each file reference replaced by ``fn(ref)``."""
    if isinstance(value, dict):
        if FILE_REF in value:
            return fn(value)
        return {k: map_files(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_files(v, fn) for v in value]
    return value


def file_refs(value: Any) -> Iterator[FileRef]:
    """The file references in ``value``, in the order the output lists them."""
    if isinstance(value, dict):
        if FILE_REF in value:
            yield value
        else:
            for v in value.values():
                yield from file_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from file_refs(v)

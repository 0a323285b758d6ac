"""Model instances from one hand-written SQL row, for the few reads on the annotator's click
path (token authentication, the image a decode names).

The token lookup takes 0.02 ms as raw SQL and 0.33 ms through the ORM, which builds and
compiles the SQL again on every call (the decode's joined image query: 0.89 ms); at 15-50 ms
per decode that is several percent of a click. Here each query's SQL is written once from the
models' metadata (table and column names, quoted for the connection's vendor), and each row
becomes real model instances through ``Model.from_db``: the fields that were not selected are
deferred and load on first access, as with ``QuerySet.only()``.

Only fields whose database value needs no conversion are selected (integers, strings, foreign
keys) and booleans, which SQLite returns as 0/1. Dates and JSON are left deferred: a column
whose value would need a backend converter is refused when the query is declared, so nothing
can come back as a raw string where the ORM would give a datetime.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from django.db import connections, models

M = TypeVar("M", bound=models.Model)

# Field classes whose values come back from every supported backend as Python wants them.
_PLAIN_FIELDS: tuple[type[Any], ...] = (
    models.AutoField,
    models.BigAutoField,
    models.IntegerField,  # includes BigInteger / PositiveInteger / SmallInteger
    models.CharField,  # includes SlugField, EmailField
    models.TextField,
    models.ForeignKey,  # the id column
)


@dataclass(frozen=True)
class Columns(Generic[M]):
    """Some concrete fields of ``model`` read under table alias ``alias``."""

    model: type[M]
    alias: str
    fields: tuple[str, ...]  # field names; "project" means the project_id column

    @cached_property
    def _fields(self) -> list["models.Field[Any, Any]"]:
        found = []
        for name in self.fields:
            field = self.model._meta.get_field(name)
            if not isinstance(field, models.Field) or not field.concrete:
                raise TypeError(f"{self.model.__name__}.{name} is not a concrete column")
            if not isinstance(field, (models.BooleanField, *_PLAIN_FIELDS)):
                raise TypeError(
                    f"{self.model.__name__}.{name} ({type(field).__name__}) needs a database "
                    "converter: leave it deferred"
                )
            found.append(field)
        # Model.from_db takes the values in the model's own field order.
        order = {field: index for index, field in enumerate(self.model._meta.concrete_fields)}
        return sorted(found, key=order.__getitem__)

    def select(self, quote: Any) -> list[str]:
        """``alias."column"`` for each field (``quote``: the connection's quote_name)."""
        return [f"{self.alias}.{quote(field.column)}" for field in self._fields]

    def names(self, quote: Any) -> dict[str, str]:
        """Every concrete field of the model (selected or not) as ``alias."column"``, for the
        query's joins and conditions."""
        return {
            field.name: f"{self.alias}.{quote(field.column)}"
            for field in self.model._meta.concrete_fields
        }

    def instance(self, values: Sequence[Any], using: str) -> M | None:
        """The model instance of this row's values (None when its primary key is NULL: the
        row of a LEFT JOIN that matched nothing)."""
        if values[self._layout[0]] is None:
            return None
        booleans = self._layout[2]
        converted = [
            bool(value) if value is not None and index in booleans else value
            for index, value in enumerate(values)
        ]
        return self.model.from_db(using, self._layout[1], converted)

    @cached_property
    def _layout(self) -> tuple[int, list[str], frozenset[int]]:
        """(the primary key's position, the attnames, the positions of booleans)."""
        fields = self._fields
        primary = next(index for index, field in enumerate(fields) if field.primary_key)
        booleans = frozenset(
            index for index, field in enumerate(fields) if isinstance(field, models.BooleanField)
        )
        return primary, [field.attname for field in fields], booleans


class RawRowQuery:
    """One SELECT of several models' columns, its SQL built once per database vendor.

    ``tail`` is the FROM / JOIN / WHERE part, a ``str.format`` template: ``{t[a]}`` is the
    quoted table of the part with alias ``a`` and ``{c[a][field]}`` its column; parameters
    are ``%s``. Aliases are plain lower-case identifiers."""

    def __init__(self, parts: Sequence[Columns[Any]], tail: str, using: str = "default") -> None:
        self.parts = list(parts)
        self.tail = tail
        self.using = using
        self._sql: dict[str, str] = {}

    def sql(self) -> str:
        connection = connections[self.using]
        built = self._sql.get(connection.vendor)
        if built is None:
            quote = connection.ops.quote_name
            selected = ", ".join(column for part in self.parts for column in part.select(quote))
            tables = {part.alias: quote(part.model._meta.db_table) for part in self.parts}
            columns = {part.alias: part.names(quote) for part in self.parts}
            built = f"SELECT {selected} {self.tail.format(t=tables, c=columns)} LIMIT 1"
            self._sql[connection.vendor] = built
        return built

    def first(self, params: Sequence[Any]) -> list[Any] | None:
        """One instance (or None, for an unmatched LEFT JOIN) per part from the first row, or
        None when there is no row."""
        with connections[self.using].cursor() as cursor:
            cursor.execute(self.sql(), list(params))
            row = cursor.fetchone()
        if row is None:
            return None
        instances, start = [], 0
        for part in self.parts:
            end = start + len(part.fields)  # (the same count, in the model's order)
            instances.append(part.instance(row[start:end], self.using))
            start = end
        return instances

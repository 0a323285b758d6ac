"""The API's id fields: ids in request bodies and query parameters are checked against the range
of the id columns (``annotation.ids``), so an id no row can have answers 400 ``invalid`` naming
the field, never a database error."""

from typing import Any

from rest_framework import serializers

from annotation.ids import MAX_ID


class IdField(serializers.IntegerField):
    """A row id: an integer from 1 to 2**63 - 1."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)

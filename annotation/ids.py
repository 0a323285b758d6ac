"""Row ids as the tables store them: positive, at most a signed 64-bit integer (``BigAutoField``
on PostgreSQL and SQLite).

Django turns an out-of-range value in a ``pk=`` lookup into an empty result, but a foreign-key
lookup (``user_id=``), an ``__in`` list or hand-written SQL hands it to the driver, and SQLite's
raises OverflowError: a 500. So ids from outside are checked first: request bodies and query
parameters answer 400 (``annotation.api.ids.IdField``), and selectors treat a path id out of
range as one with no row (404).
"""

MAX_ID = 2**63 - 1


def id_in_range(value: int) -> bool:
    """Whether ``value`` can be a row id (1 to 2**63 - 1)."""
    return 1 <= value <= MAX_ID


def id_from_query(raw: str | None) -> int | None:
    """A web page's optional ``?name=<id>`` parameter: the id, or None for anything that cannot
    be a row id (the page then ignores it, as it does a missing one)."""
    if raw is None or not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if id_in_range(value) else None

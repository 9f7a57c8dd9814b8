"""A dict that tells the state file which keys were set since it last looked, so that a change
costs a journal line the size of the change (`sandbox/persistence.py`), not the whole store."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

K = TypeVar("K")
V = TypeVar("V")
Method = TypeVar("Method", bound=Callable[..., Any])


def _rewrites(method: Method) -> Method:
    """`method` changes the dict in a way a few keys cannot tell: mark it rewritten."""

    @functools.wraps(method)
    def marked(self: TrackedDict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        self.rewritten = True
        return method(self, *args, **kwargs)

    return cast(Method, marked)


class TrackedDict(dict[K, V]):
    """Once `track()` was called, `d[key] = value` remembers `key` until `take_changes()`.
    Anything else that changes the dict (del, pop, update, setdefault, clear, |=) marks the
    whole dict `rewritten`, to be written out whole."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changed: dict[K, None] | None = None  # an ordered set; None: not tracked
        self.rewritten = False

    def track(self) -> None:
        """From now on remember the keys set (what was set before is on disk)."""
        self._changed = {}
        self.rewritten = False

    def take_changes(self) -> list[K]:
        """The keys set since the last call (or `track()`), forgotten here."""
        changed = list(self._changed or ())
        if self._changed is not None:
            self._changed = {}
        return changed

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        if self._changed is not None:
            self._changed[key] = None

    __delitem__ = _rewrites(dict.__delitem__)
    __ior__ = _rewrites(dict.__ior__)
    pop = _rewrites(dict.pop)
    popitem = _rewrites(dict.popitem)
    setdefault = _rewrites(dict.setdefault)
    update = _rewrites(dict.update)
    clear = _rewrites(dict.clear)

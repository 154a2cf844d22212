"""In-process twins of the cache (embedded mode and tests)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class MemoryCache:
    """``Cache`` as a bounded LRU set of keys; per process, lost on restart (the store is truth)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    async def seen(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    async def remember(self, keys: Sequence[str]) -> None:
        if self._capacity <= 0:
            return
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

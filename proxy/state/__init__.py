"""Shared state: :func:`build_store` turns ``[store] url`` into a :class:`Store`.

See :mod:`proxy.state.base` for the operations and their contract. A running server gets its
store through :func:`acquire_store` / :func:`release_store`: a reload with an unchanged
``[store]`` section keeps the same store (connections, SQLite threads), so sessions of the old
generation still in flight keep working; the store is closed when its last user releases it.
"""

from __future__ import annotations

from proxy.state.base import Store, StoreError
from proxy.state.config import StoreConfig

__all__ = ["Store", "StoreError", "acquire_store", "build_store", "release_store"]

_shared: dict[StoreConfig, tuple[Store, int]] = {}


def acquire_store(config: StoreConfig) -> Store:
    store, users = _shared.get(config) or (build_store(config), 0)
    _shared[config] = (store, users + 1)
    return store


async def release_store(store: Store) -> None:
    for config, (s, users) in list(_shared.items()):
        if s is store:
            if users > 1:
                _shared[config] = (s, users - 1)
                return
            del _shared[config]
            break
    await store.close()


def build_store(config: StoreConfig) -> Store:
    url = config.url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from proxy.state.memory import MemoryStore

        return MemoryStore(config.timeout, config.prefix, config.memory_max_keys)
    if scheme == "sqlite":
        from proxy.state.sqlite_store import SqliteStore

        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url[len("sqlite://") :]
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        if not path:
            raise ValueError("store.url: sqlite:///path needs a path")
        return SqliteStore(path, config.timeout, config.prefix, config.purge_interval, config.down_backoff)
    if scheme in ("redis", "rediss", "redis+sentinel", "redis+cluster", "unix"):
        from proxy.state.redis_store import RedisStore

        return RedisStore(url, config.timeout, config.prefix, config.password, config.down_backoff)
    raise ValueError(f"store.url: unsupported backend {url!r} (memory://, sqlite:///path, redis://...)")

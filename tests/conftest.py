"""Shared fixtures. The store ones follow DESIGN §5: one process may open ONE chdb path for its whole
life, so the whole session shares one path and every test gets a database of its own inside it.
Nothing here imports chdb until a store fixture is used (the import costs ~0.5 s)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory) -> str:
    """The session's single embedded ClickHouse path."""
    return str(tmp_path_factory.mktemp("chdb-session") / "chdb")


@pytest.fixture
def store_database() -> str:
    """A fresh database name; several tests' stores coexist in one chdb path by name."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store_settings(tmp_path, chdb_path, store_database):
    """Store settings for one test: its own database and data dir (WAL), the session's chdb path."""
    from anysentry.store.settings import StoreSettings

    return StoreSettings(data_dir=str(tmp_path / "data"), chdb_dir=chdb_path, database=store_database)


@pytest.fixture
def store(store_settings):
    """An opened, migrated `Store` on a fresh database, dropped afterwards."""
    from anysentry.store.client import Store

    opened = Store(store_settings).open()
    yield opened
    opened.command(f"DROP DATABASE IF EXISTS `{store_settings.database}` SYNC")
    opened.close()

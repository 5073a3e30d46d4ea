"""Shared fixtures: a private PostgreSQL database per test."""
from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_DSN = os.environ.get("HFTGW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_HELP = (
    "PostgreSQL is not reachable at {dsn} ({err}). The tests need the real server: start it with\n"
    "    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    "or point HFTGW_TEST_PG_DSN at a server where user postgres may create databases."
)


def _dsn_for(dbname: str) -> str:
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{dbname}"


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """DSN of a new, empty database that is dropped after the test.

    Fails (never skips) when PostgreSQL cannot be reached, saying how to start it.
    """
    name = "hftgw_test_" + uuid.uuid4().hex[:12]
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        pytest.fail(PG_HELP.format(dsn=PG_ADMIN_DSN, err=exc), pytrace=False)
    try:
        yield _dsn_for(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

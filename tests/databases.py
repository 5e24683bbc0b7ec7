"""A PostgreSQL database of the test run's own, with a role of its own, dropped at the end."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
import pytest
from yarl import URL

# An administrator's URL: the tests create their role and database with it.
ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)
# The test role's password; the suite's logs are searched for it, like every secret.
PASSWORD = "dedupe-pw-31337"


async def _admin(*statements: str) -> None:
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {URL(ADMIN_URL).with_password(None)} "
            f"({type(exc).__name__}); `make test` starts it"
        )
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def own_database_async() -> AsyncIterator[str]:
    """`own_database`, for code already in an event loop (the benchmark)."""
    name = f"relay_test_{uuid.uuid4().hex[:10]}"
    await _admin(
        f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'", f"CREATE DATABASE {name} OWNER {name}"
    )
    try:
        yield _url(name)
    finally:
        await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}")


@contextmanager
def own_database() -> Iterator[str]:
    """Create a role and a database for this run; yield the URL that uses them."""
    name = f"relay_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(
        _admin(
            f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'",
            f"CREATE DATABASE {name} OWNER {name}",
        )
    )
    try:
        yield _url(name)
    finally:
        asyncio.run(
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}")
        )


def _url(name: str) -> str:
    return str(URL(ADMIN_URL).with_user(name).with_password(PASSWORD).with_path(f"/{name}"))

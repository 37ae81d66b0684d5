"""What the store refuses in a Redis server (``ServerInfo.problems``, read from INFO): a version
older than 7.0, which cannot run the scripts, or an eviction policy that would silently lose
marks or aggregates."""

from __future__ import annotations

from pathlib import Path

import pytest

from stats.store import ServerInfo

LUA_SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "lua").glob("*.lua"))


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        (ServerInfo("n:1", True, "redis 6.2.14", "6.2.14", "noeviction"), "version 6.2.14"),
        (ServerInfo("n:1", True, "valkey 9.1.2", "7.2.4", "volatile-lru"), "volatile-lru"),
        (ServerInfo("n:1", True, "valkey 9.1.2", "7.2.4", "noeviction"), None),
        (ServerInfo("n:1", True, None, None, None), None),  # INFO refused: a warning instead
        (ServerInfo("n:1", False, error="refused"), None),  # down: an outage, not refused
    ],
)
def test_what_refuses_a_server(server: ServerInfo, problem: str | None) -> None:
    found = server.problems()
    assert (problem in found[0]) if problem else not found


def test_an_old_server_is_told_what_needs_7_0() -> None:
    (problem,) = ServerInfo("n:1", True, "redis 6.2.14", "6.2.14", "noeviction").problems()
    assert problem == (
        "Redis n:1 is version 6.2.14; orderpipe needs 7.0 or newer (its Lua scripts start "
        "with a #!lua line, which older servers refuse to run)"
    )


def test_every_script_starts_with_the_shebang_that_needs_7_0() -> None:
    """What the message above says of the scripts; without the shebang a script under OOM
    would stop at its first write instead of being refused whole."""
    assert [p.name for p in LUA_SCRIPTS] == [
        "apply_batch.lua",
        "fenced_write.lua",
        "next_generation.lua",
        "refresh_lock.lua",
        "release_lock.lua",
    ]
    assert all(p.read_text().startswith("#!lua\n") for p in LUA_SCRIPTS)

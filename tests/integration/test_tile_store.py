"""The online tile store's atomic write against a real Redis."""

from __future__ import annotations

from featurestream.settings import Settings
from streams.core import TileUpdate
from streams.online import ProgressKey, TileStore, connect, progress_key
from streams.online.tile_store import marker_key


def _enc(value: object) -> bytes:
    return str(value).encode()


def test_a_write_larger_than_one_lua_unpack_sets_and_deletes_every_field(
    local_stack: Settings,
) -> None:
    url = local_stack.online_redis_url.rsplit("/", 1)[0] + "/9"
    client = connect(url)
    client.flushdb()
    store = TileStore(client, url)
    key = "fst:p:big_view:1"
    # More fields than Redis's Lua can unpack in one call (about 8,000 values).
    first = TileUpdate(key, {f"s:{i}": (_enc, i) for i in range(6_000)}, (), 60_000)
    assert store.write([first], {ProgressKey("clicks", 0): 10}, project="p") == 6_000
    stored = client.hgetall(key)
    assert len(stored) == 6_000 and stored[b"s:5999"] == b"5999"
    assert client.hgetall(progress_key("p")) == {b"clicks:0": b"10"}
    assert 0 < client.pttl(key) <= 60_000
    # Evict 5,000 of them and set the rest again, in one update.
    second = TileUpdate(
        key,
        {f"s:{i}": (_enc, i + 1) for i in range(5_000, 6_000)},
        tuple(f"s:{i}" for i in range(5_000)),
        60_000,
    )
    store.write([second], {ProgressKey("clicks", 0): 20}, project="p")
    stored = client.hgetall(key)
    assert set(stored) == {f"s:{i}".encode() for i in range(5_000, 6_000)}
    assert stored[b"s:5000"] == b"5001"
    assert client.hgetall(progress_key("p")) == {b"clicks:0": b"20"}


def test_progress_is_not_claimed_when_the_marker_is_gone(local_stack: Settings) -> None:
    url = local_stack.online_redis_url.rsplit("/", 1)[0] + "/10"
    client = connect(url)
    client.flushdb()
    store = TileStore(client, url)
    marker = marker_key("p", "engine")
    update = TileUpdate("fst:p:v:1", {"s:1": (_enc, 1)}, (), 60_000)
    store.write([update], {ProgressKey("clicks", 0): 5}, project="p", marker=marker)
    assert not store.last_write_found_marker
    assert client.hgetall(progress_key("p")) == {}  # tiles before it may be missing
    store.set_marker(marker)
    store.write([update], {ProgressKey("clicks", 0): 6}, project="p", marker=marker)
    assert store.last_write_found_marker
    assert client.hgetall(progress_key("p")) == {b"clicks:0": b"6"}

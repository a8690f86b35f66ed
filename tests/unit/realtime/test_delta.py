"""Fossil delta subscriptions (``delta: "fossil"``), sans-I/O: negotiation, what each kind of
subscriber receives, and that applying the deltas gives back every publication."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.realtime import Conn, flush, make_node

from gateway.config import NamespaceConfig
from gateway.realtime import fossil
from gateway.realtime.protocol import raw


def delta_node(**options: Any) -> Any:
    doc = NamespaceConfig(
        history_size=50,
        history_ttl=300,
        force_recovery=True,
        allowed_delta_types=["fossil"],
        delta_publish=True,
    )
    for key, value in options.items():
        setattr(doc, key, value)
    return make_node(namespaces={"doc": doc, "plain": NamespaceConfig()})


def document(version: int) -> dict[str, Any]:
    """About 2 KB of JSON; one value changes from one version to the next."""
    return {
        "id": "board-1",
        "version": version,
        "rows": [{"name": f"row {i}", "score": 1000 + i, "tags": ["a", "b"]} for i in range(40)],
    }


def publications(conn: Conn) -> list[dict[str, Any]]:
    return [m["push"]["pub"] for m in conn.transport.take() if "pub" in m.get("push", {})]


def decode(pubs: list[dict[str, Any]], base: bytes | None = None) -> list[Any]:
    """What centrifuge-js does with a delta subscription's publications."""
    out = []
    for pub in pubs:
        assert isinstance(pub["data"], str)  # always a JSON string on a delta subscription
        text = pub["data"].encode()
        if pub.get("delta"):
            assert base is not None, "a delta with no base: the SDK would disconnect"
            text = fossil.apply(base, text)
        base = text
        out.append(json.loads(text))
    return out


@pytest.mark.gen_test
async def test_negotiated_delta_sends_whole_then_deltas_that_rebuild_every_version() -> None:
    node = delta_node()
    conn = Conn(node)
    await conn.connect()
    result = (await conn.call("subscribe", {"channel": "doc:1", "delta": "fossil"}))["subscribe"]
    assert result["delta"] is True
    for version in range(5):
        await node.publish("doc:1", raw(document(version)))
    await flush()
    pubs = publications(conn)
    assert [bool(p.get("delta")) for p in pubs] == [False, True, True, True, True]
    assert decode(pubs) == [document(v) for v in range(5)]
    whole = len(json.dumps(document(4), separators=(",", ":")))
    assert all(len(p["data"]) < whole / 20 for p in pubs[1:])  # a few dozen bytes, not 2 KB


@pytest.mark.gen_test
async def test_other_subscribers_of_the_channel_get_plain_publications() -> None:
    node = delta_node()
    delta, plain = Conn(node), Conn(node)
    for conn in (delta, plain):
        await conn.connect()
    await delta.call("subscribe", {"channel": "doc:2", "delta": "fossil"})
    await plain.call("subscribe", {"channel": "doc:2"})
    for version in range(3):
        await node.publish("doc:2", raw(document(version)))
    await flush()
    assert [p["data"] for p in publications(plain)] == [document(v) for v in range(3)]
    assert decode(publications(delta)) == [document(v) for v in range(3)]


@pytest.mark.parametrize(
    ("options", "channel"),
    [
        ({}, "plain:1"),  # the namespace does not allow delta
        ({"force_recovery": False}, "doc:3"),  # no recovery: a gap could leave a stale base
    ],
)
@pytest.mark.gen_test
async def test_delta_is_not_negotiated_where_it_is_not_allowed(
    options: dict[str, Any], channel: str
) -> None:
    node = delta_node(**options)
    conn = Conn(node)
    await conn.connect()
    result = (await conn.call("subscribe", {"channel": channel, "delta": "fossil"}))["subscribe"]
    assert "delta" not in result
    await node.publish(channel, raw(document(1)))
    await flush()
    assert [p["data"] for p in publications(conn)] == [document(1)]  # as is, not as text


@pytest.mark.gen_test
async def test_without_delta_publish_the_data_is_whole_text() -> None:
    node = delta_node(delta_publish=False)
    conn = Conn(node)
    await conn.connect()
    await conn.call("subscribe", {"channel": "doc:4", "delta": "fossil"})
    for version in range(3):
        await node.publish("doc:4", raw(document(version)))
    await flush()
    pubs = publications(conn)
    assert not any(p.get("delta") for p in pubs)
    assert decode(pubs) == [document(v) for v in range(3)]


@pytest.mark.gen_test
async def test_recovered_publications_are_whole_text_and_the_next_live_one_too() -> None:
    node = delta_node()
    conn = Conn(node)
    await conn.connect()
    first = (await conn.call("subscribe", {"channel": "doc:5", "delta": "fossil"}))["subscribe"]
    await conn.call("unsubscribe", {"channel": "doc:5"})
    for version in range(3):
        await node.publish("doc:5", raw(document(version)))
    again = (
        await conn.call(
            "subscribe",
            {"channel": "doc:5", "delta": "fossil", "recover": True, "epoch": first["epoch"]},
        )
    )["subscribe"]
    assert again["recovered"] is True and again["delta"] is True
    recovered = again["publications"]
    await node.publish("doc:5", raw(document(3)))
    await node.publish("doc:5", raw(document(4)))
    await flush()
    live = publications(conn)
    assert [bool(p.get("delta")) for p in recovered + live] == [False] * 4 + [True]
    assert decode(recovered + live) == [document(v) for v in range(5)]


@pytest.mark.gen_test
async def test_a_delta_no_smaller_than_the_data_is_sent_whole() -> None:
    node = delta_node()
    conn = Conn(node)
    await conn.connect()
    await conn.call("subscribe", {"channel": "doc:6", "delta": "fossil"})
    await node.publish("doc:6", raw("x"))
    await node.publish("doc:6", raw("y"))  # nothing to copy: the delta would be longer
    await flush()
    pubs = publications(conn)
    assert [bool(p.get("delta")) for p in pubs] == [False, False]
    assert decode(pubs) == ["x", "y"]

"""npm version ranges as Next.js writes its engines.node (gateway/engines.py)."""

from __future__ import annotations

import pytest

from gateway.engines import RangeError, parse_version, satisfies

NEXT_14 = ">=18.17.0"
NEXT_15 = "^18.18.0 || ^19.8.0 || >= 20.0.0"
NEXT_16 = ">=20.9.0"


@pytest.mark.parametrize(
    ("node", "spec", "ok"),
    [
        ("v18.17.0", NEXT_14, True),
        ("v18.16.1", NEXT_14, False),
        ("v22.1.0", NEXT_14, True),
        ("v18.18.0", NEXT_15, True),
        ("v18.17.1", NEXT_15, False),
        ("v19.7.0", NEXT_15, False),  # only ^19.8.0 of the 19 line
        ("v19.8.1", NEXT_15, True),
        ("v20.0.0", NEXT_15, True),
        ("v24.3.0", NEXT_15, True),
        ("v20.9.0", NEXT_16, True),
        ("v20.8.1", NEXT_16, False),
        ("v18.20.4", NEXT_16, False),
        ("v25.0.0", NEXT_16, True),
    ],
)
def test_the_node_floors_of_next_14_15_and_16(node: str, spec: str, ok: bool) -> None:
    assert satisfies(parse_version(node), spec) is ok


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("18 - 20", ["18.0.0", "20.99.1"], ["17.9.9", "21.0.0"]),
        ("~18.18.0", ["18.18.5"], ["18.19.0", "18.17.9"]),
        ("~18", ["18.0.0", "18.99.0"], ["19.0.0"]),
        ("^0.2.3", ["0.2.9"], ["0.3.0"]),
        ("20.x", ["20.0.0", "20.9.1"], ["21.0.0", "19.9.9"]),
        (">18", ["19.0.0"], ["18.99.99"]),
        ("<=20", ["20.9.9"], ["21.0.0"]),
        (">=18.17 <22", ["18.17.0", "21.9.9"], ["18.16.9", "22.0.0"]),
        ("=20.9.0", ["20.9.0"], ["20.9.1"]),
        ("v20.9.0", ["20.9.0"], ["20.9.1"]),
        ("*", ["0.0.1", "99.0.0"], []),
        ("", ["18.0.0"], []),
    ],
)
def test_range_forms(spec: str, inside: list[str], outside: list[str]) -> None:
    for version in inside:
        assert satisfies(parse_version(version), spec), (version, spec)
    for version in outside:
        assert not satisfies(parse_version(version), spec), (version, spec)


def test_an_unreadable_range_is_an_error_not_a_guess() -> None:
    with pytest.raises(RangeError, match="'>=twenty'"):
        satisfies((20, 9, 0), ">=twenty")
    with pytest.raises(RangeError):
        parse_version("latest")

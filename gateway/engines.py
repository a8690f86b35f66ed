"""npm version ranges, as package.json ``engines`` writes them: enough of node-semver's grammar
to tell whether a Node.js binary is one the installed Next.js accepts.

Next.js has written its floor three ways (``>=18.17.0`` in 14, ``^18.18.0 || ^19.8.0 ||
>= 20.0.0`` in 15, ``>=20.9.0`` in 16), so a hard-coded number is wrong for two of them.
Supported: ``||`` alternatives of space-separated comparators (``<``, ``<=``, ``>``, ``>=``,
``=``), caret and tilde ranges, x-ranges and partial versions (``20``, ``20.x``, ``*``), hyphen
ranges (``18 - 20``), a ``v`` prefix and a space after an operator. Prerelease tags are ignored
(Node.js releases have none).
"""

from __future__ import annotations

import re

Version = tuple[int, int, int]
_ANY: list[tuple[str, Version]] = []  # a comparator set that matches everything

_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:[-+][0-9A-Za-z.-]*)?$")
_COMPARATOR = re.compile(r"^(<=|>=|<|>|=|\^|~>?)?(.*)$")


class RangeError(ValueError):
    """A range this module cannot read; ``str()`` quotes it."""


def parse_version(text: str) -> Version:
    """``v20.9.0`` or ``20.9.0`` -> ``(20, 9, 0)``; missing parts are 0."""
    m = re.match(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if m is None:
        raise RangeError(f"{text!r} is not a version")
    return int(m[1]), int(m[2] or 0), int(m[3] or 0)


def satisfies(version: Version, spec: str) -> bool:
    """True if ``version`` is in the range ``spec`` (e.g. ``^18.18.0 || >= 20.0.0``)."""
    return any(
        all(_compare(version, op, bound) for op, bound in comparators)
        for comparators in parse_range(spec)
    )


def parse_range(spec: str) -> list[list[tuple[str, Version]]]:
    """The alternatives of ``spec``, each a list of ``(operator, version)`` that must all hold,
    with operators among ``<``, ``<=``, ``>``, ``>=``."""
    alternatives = []
    for part in spec.split("||"):
        # ">= 20.0.0" is ">=20.0.0" (node-semver accepts the space).
        text = re.sub(r"(<=|>=|<|>|=|\^|~>?)\s+", r"\1", part.strip())
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
        if hyphen:
            low, high = hyphen.groups()
            alternatives.append(_expand(">=", low) + _expand("<=", high))
            continue
        comparators: list[tuple[str, Version]] = []
        for token in text.split():
            m = _COMPARATOR.match(token)
            assert m is not None  # every string matches
            comparators += _expand(m[1] or "", m[2])
        alternatives.append(comparators)
    return alternatives


def _expand(op: str, partial: str) -> list[tuple[str, Version]]:
    """One comparator as bounds: ``^18.18`` -> ``>=18.18.0 <19.0.0``."""
    m = _PARTIAL.match(partial)
    if m is None:
        raise RangeError(f"cannot read the version range part {op + partial!r}")
    given = [None if p is None or p in "xX*" else int(p) for p in m.groups()]
    # Parts after a wildcard are wildcards too ("18.x.5" is "18.x").
    if None in given:
        given = given[: given.index(None)] + [None] * (3 - given.index(None))
    known = [p for p in given if p is not None]
    if not known:  # "*", "x": anything (and "<*" nothing, which nobody writes)
        return _ANY
    low = [*known, 0, 0][:3]
    major, minor, patch = low
    exact = len(known) == 3
    if op in ("", "="):
        if exact:
            return [(">=", (major, minor, patch)), ("<=", (major, minor, patch))]
        return [(">=", (major, minor, patch)), ("<", _bump(known))]
    if op == "^":
        if major > 0 or len(known) == 1:
            upper: Version = (major + 1, 0, 0)
        elif minor > 0 or len(known) == 2:
            upper = (0, minor + 1, 0)
        else:
            upper = (0, 0, patch + 1)
        return [(">=", (major, minor, patch)), ("<", upper)]
    if op in ("~", "~>"):
        upper = (major + 1, 0, 0) if len(known) == 1 else (major, minor + 1, 0)
        return [(">=", (major, minor, patch)), ("<", upper)]
    if exact:
        return [(op, (major, minor, patch))]
    # Partial versions: ">1.2" is ">=1.3.0", "<=1.2" is "<1.3.0", ">=1.2" and "<1.2" as is.
    if op == ">":
        return [(">=", _bump(known))]
    if op == "<=":
        return [("<", _bump(known))]
    return [(op, (major, minor, patch))]


def _bump(known: list[int]) -> Version:
    """The first version past a partial one: ``18`` -> ``19.0.0``, ``18.18`` -> ``18.19.0``."""
    if len(known) == 1:
        return (known[0] + 1, 0, 0)
    return (known[0], known[1] + 1, 0)


def _compare(version: Version, op: str, bound: Version) -> bool:
    if op == ">=":
        return version >= bound
    if op == ">":
        return version > bound
    if op == "<=":
        return version <= bound
    return version < bound

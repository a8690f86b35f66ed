"""JWT verification (PyJWT) for connection and subscription tokens.

The algorithm is pinned by configuration, never taken on the token's word: ``alg: none`` and
any algorithm not listed are refused, and the key is chosen by algorithm family (the shared
secret for HS*, the public key or JWKS for RS*/ES*/PS*), so a token signed with HMAC over the
public key (the classic HS/RS confusion) cannot verify. JWKS keys are fetched off the event
loop (PyJWKClient does blocking HTTP) and cached by PyJWKClient.

Claims are decoded strictly (jsonsafe: no NaN, lone surrogates or deep nesting), and ``exp``,
``nbf`` and ``iat`` must be finite numbers: PyJWT int()s them, so ``"exp": "9999999999"`` would
otherwise pass, and ``"exp": true`` would read as 1970.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from gateway.realtime import jsonsafe
from gateway.realtime.protocol import Raw, raw

_TIME_CLAIMS = ("exp", "nbf", "iat")


class TokenError(Exception):
    """A token that cannot be accepted."""


class TokenExpired(TokenError):
    """Valid but expired: the client should fetch a new one (error 109)."""


class TokenInvalid(TokenError):
    """Malformed, badly signed, wrong algorithm, missing claims (disconnect 3500)."""


@dataclass(frozen=True)
class Credentials:
    """Who a connection belongs to, from its token."""

    user: str
    expire_at: float | None = None  # Unix seconds
    info: Raw | None = None
    channels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SubscriptionGrant:
    """A subscription token's claims."""

    user: str
    channel: str
    expire_at: float | None = None
    info: Raw | None = None


@dataclass(frozen=True)
class VerifierSettings:
    secret: str = ""
    algorithms: tuple[str, ...] = ("HS256",)
    public_key: str = ""
    jwks_url: str = ""
    audience: str = ""
    issuer: str = ""
    require_exp: bool = True
    leeway: float = 5.0


def _load_public_key(value: str) -> str:
    if value and "-----BEGIN" not in value and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    return value


class _StrictJWT(jwt.PyJWT):
    """PyJWT, with the payload decoded by jsonsafe and the time claims checked before PyJWT
    validates them. ``_decode_payload`` is PyJWT's documented hook for subclasses; it runs
    after the signature is verified and before the claims are."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        try:
            payload = jsonsafe.loads(decoded["payload"])
        except jsonsafe.JsonError as e:
            raise jwt.DecodeError(f"invalid payload: {e}") from None
        if not isinstance(payload, dict):
            raise jwt.DecodeError("the payload must be a JSON object")
        for claim in _TIME_CLAIMS:
            if claim in payload and not _is_time(payload[claim]):
                raise jwt.DecodeError(f"{claim} must be a number of seconds")
        return payload


if not hasattr(jwt.PyJWT, "_decode_payload"):  # the override above would be silently skipped
    raise ImportError("this PyJWT has no PyJWT._decode_payload: claims cannot be checked")


def _is_time(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int no float can hold
        return False


class TokenVerifier:
    def __init__(self, settings: VerifierSettings) -> None:
        self.s = settings
        self._jwt = _StrictJWT()
        self._public_key = _load_public_key(settings.public_key)
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None

    async def connection(self, token: str) -> Credentials:
        claims = await self._decode(token)
        user = claims.get("sub", "")
        if not isinstance(user, str):
            raise TokenInvalid("sub must be a string")
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise TokenInvalid("channels must be a list of strings")
        return Credentials(
            user=user,
            expire_at=_exp(claims),
            info=raw(claims["info"]) if "info" in claims else None,
            channels=channels,
        )

    async def subscription(self, token: str) -> SubscriptionGrant:
        claims = await self._decode(token)
        user, channel = claims.get("sub", ""), claims.get("channel")
        if not isinstance(user, str) or not isinstance(channel, str) or not channel:
            raise TokenInvalid("a subscription token needs sub and channel")
        return SubscriptionGrant(
            user=user,
            channel=channel,
            expire_at=_exp(claims),
            info=raw(claims["info"]) if "info" in claims else None,
        )

    async def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise TokenInvalid(f"malformed token: {e}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.s.algorithms:
            raise TokenInvalid(f"algorithm {alg!r} is not accepted")
        key: Any
        if alg.startswith("HS"):
            if not self.s.secret:
                raise TokenInvalid("no secret configured for HMAC tokens")
            key = self.s.secret
        elif self._jwks is not None:
            try:
                loop = asyncio.get_running_loop()
                signing = await loop.run_in_executor(
                    None, self._jwks.get_signing_key_from_jwt, token
                )
            except jwt.PyJWTError as e:
                raise TokenInvalid(f"no JWKS key for the token: {e}") from None
            key = signing.key
        elif self._public_key:
            key = self._public_key
        else:
            raise TokenInvalid(f"no public key configured for {alg} tokens")
        options: dict[str, Any] = {"require": ["exp"] if self.s.require_exp else []}
        if not self.s.audience:
            options["verify_aud"] = False
        try:
            claims = self._jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.s.audience or None,
                issuer=self.s.issuer or None,
                leeway=self.s.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired") from None
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise TokenInvalid(str(e)) from None
        if not isinstance(claims, dict):
            raise TokenInvalid("claims must be an object")
        return claims


def _exp(claims: dict[str, Any]) -> float | None:
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


def ttl_seconds(expire_at: float, now: float | None = None) -> int:
    """Seconds left before ``expire_at``, at least 1 (the ``ttl`` of a connect reply)."""
    return max(1, int(expire_at - (now if now is not None else time.time())))

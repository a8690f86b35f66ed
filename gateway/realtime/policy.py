"""Who may do what on a channel: one set of rules per namespace, chosen at config time.

A namespace's options (``private``, ``allow_subscribe``, ``subscribe_hook``, ``allow_publish``,
``publish_hook``, ``allow_presence*``, ``allow_history*``) are turned once into policy objects
(:class:`ChannelRules`); a session asks them and never reads the options itself, so a rule is
written in exactly one place.

Subscribe, in the order Centrifugo applies them: the namespace's subscribe hook (the app
decides); else a subscription token (required on ``private`` namespaces and where
``allow_subscribe`` is off, checked whenever one is given); else ``allow_subscribe``.
Publish: the publish hook; else ``allow_publish`` for subscribers of the channel.
Presence and history: not configured -> 108; ``allow_*_for_client`` for any connection
(anonymous ones only with ``allow_*_for_anonymous``); ``allow_*`` for subscribers.

Nothing here imports Tornado.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.config import NamespaceConfig, RealtimeConfig
from gateway.realtime import codes, hooks
from gateway.realtime.auth import TokenExpired, TokenInvalid, TokenVerifier
from gateway.realtime.broker import HistoryOptions
from gateway.realtime.codes import DisconnectReply, ErrorReply
from gateway.realtime.commands import Caller, PublishRequest, SubscribeRequest
from gateway.realtime.protocol import Raw

T = TypeVar("T")
__all__ = ["Caller", "ChannelRules", "Namespaces", "SubscribeGrant", "verified"]


async def verified(verification: Awaitable[T]) -> T:
    """A token's claims. Expired: error 109 (the SDK fetches a new token and retries); any
    other problem: disconnect 3500 (terminal: a new token of the same kind would not help)."""
    try:
        return await verification
    except TokenExpired:
        raise ErrorReply(codes.TOKEN_EXPIRED) from None
    except TokenInvalid as e:
        raise DisconnectReply(codes.INVALID_TOKEN, detail=str(e)) from None


# -- subscribe ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribeGrant:
    """What an allowed subscription carries."""

    expire_at: float | None = None
    info: Raw | None = None
    """``chan_info`` in this subscriber's ClientInfo."""
    data: Any = None
    """``data`` of the subscribe reply."""


class SubscribePolicy(Protocol):
    async def authorize(self, caller: Caller, req: SubscribeRequest) -> SubscribeGrant:
        """The grant, or raises ErrorReply (e.g. 103) / DisconnectReply."""


class HookSubscribe:
    """The namespace's subscribe hook decides (docs/hooks.md)."""

    def __init__(self, caller: hooks.HookCaller, path: str) -> None:
        self.hooks, self.path = caller, path

    async def authorize(self, caller: Caller, req: SubscribeRequest) -> SubscribeGrant:
        answer = await self.hooks.call(self.path, "subscribe", hooks.subscribe_payload(caller, req))
        grant = hooks.SubscribeAnswer.parse(answer)
        return SubscribeGrant(grant.expire_at, grant.info, grant.data)


class TokenSubscribe:
    """A subscription token for this channel and user; without one, ``open`` decides."""

    def __init__(self, verifier: TokenVerifier, open_without_token: bool) -> None:
        self.verifier = verifier
        self.open = open_without_token

    async def authorize(self, caller: Caller, req: SubscribeRequest) -> SubscribeGrant:
        if not req.token:
            if self.open:
                return SubscribeGrant()
            raise ErrorReply(codes.PERMISSION_DENIED)
        grant = await verified(self.verifier.subscription(req.token))
        if grant.channel != req.channel or grant.user != caller.user:
            raise ErrorReply(codes.PERMISSION_DENIED)
        return SubscribeGrant(grant.expire_at, grant.info)


# -- publish --------------------------------------------------------------------------------


class PublishPolicy(Protocol):
    async def authorize(self, caller: Caller, req: PublishRequest, subscribed: bool) -> Any:
        """The data to publish (a hook may replace it), or raises ErrorReply."""


class HookPublish:
    def __init__(self, caller: hooks.HookCaller, path: str) -> None:
        self.hooks, self.path = caller, path

    async def authorize(self, caller: Caller, req: PublishRequest, subscribed: bool) -> Any:
        answer = await self.hooks.call(self.path, "publish", hooks.publish_payload(caller, req))
        return answer.get("data", req.data)


class SubscriberPublish:
    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed

    async def authorize(self, caller: Caller, req: PublishRequest, subscribed: bool) -> Any:
        if not (self.allowed and subscribed):
            raise ErrorReply(codes.PERMISSION_DENIED)
        return req.data


# -- presence and history -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureAccess:
    """Who may read a channel's presence or history (Centrifugo's namespace options)."""

    enabled: bool
    subscriber: bool = False
    client: bool = False
    anonymous: bool = False

    def check(self, caller: Caller, subscribed: bool) -> None:
        if not self.enabled:
            raise ErrorReply(codes.NOT_AVAILABLE)
        if self.client and (self.anonymous or not caller.anonymous):
            return
        if self.subscriber and subscribed:
            return
        raise ErrorReply(codes.PERMISSION_DENIED)


# -- a namespace ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelRules:
    """Everything a session needs to know about a namespace, decided once."""

    options: NamespaceConfig
    subscribe: SubscribePolicy
    publish: PublishPolicy
    presence: FeatureAccess
    history: FeatureAccess
    history_options: HistoryOptions | None

    @property
    def delta(self) -> bool:
        """Subscribers may negotiate fossil deltas (centrifuge wants recovery on as well)."""
        return "fossil" in self.options.allowed_delta_types and self.options.force_recovery

    @property
    def ordered_publish(self) -> bool:
        """A hook answers publishes in any order: run a connection's one after the other."""
        return isinstance(self.publish, HookPublish)


def rules_for(
    ns: NamespaceConfig, verifier: TokenVerifier, caller: hooks.HookCaller | None
) -> ChannelRules:
    subscribe: SubscribePolicy
    if ns.subscribe_hook and caller is not None:
        subscribe = HookSubscribe(caller, ns.subscribe_hook)
    else:
        subscribe = TokenSubscribe(
            verifier, open_without_token=ns.allow_subscribe and not ns.private
        )
    publish: PublishPolicy
    if ns.publish_hook and caller is not None:
        publish = HookPublish(caller, ns.publish_hook)
    else:
        publish = SubscriberPublish(ns.allow_publish)
    history = HistoryOptions(ns.history_size, ns.history_ttl)
    has_history = ns.history_size > 0 and ns.history_ttl > 0
    return ChannelRules(
        options=ns,
        subscribe=subscribe,
        publish=publish,
        presence=FeatureAccess(
            ns.presence,
            ns.allow_presence or ns.allow_presence_for_subscriber,
            ns.allow_presence_for_client,
            ns.allow_presence_for_anonymous,
        ),
        history=FeatureAccess(
            has_history,
            ns.allow_history or ns.allow_history_for_subscriber,
            ns.allow_history_for_client,
            ns.allow_history_for_anonymous,
        ),
        history_options=history if has_history else None,
    )


class Namespaces:
    """Channel name -> its rules: ``chat:lobby`` takes namespace ``chat``'s, ``news`` the
    default ones; an unknown namespace has none (error 102)."""

    def __init__(
        self, cfg: RealtimeConfig, verifier: TokenVerifier, caller: hooks.HookCaller | None
    ) -> None:
        self.default = rules_for(cfg.default, verifier, caller)
        self.named = {name: rules_for(ns, verifier, caller) for name, ns in cfg.namespaces.items()}

    def get(self, channel: str) -> ChannelRules | None:
        name, colon, _ = channel.partition(":")
        if not colon:
            return self.default
        return self.named.get(name)

    def require(self, channel: str) -> ChannelRules:
        rules = self.get(channel)
        if rules is None:
            raise ErrorReply(codes.UNKNOWN_CHANNEL)
        return rules

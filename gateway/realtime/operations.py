"""The channel operations a client may ask for once connected: publish, presence,
presence_stats, history, rpc, send. Each takes the session's context, who asks, the typed
request and whether the caller is subscribed to the channel; who may is the namespace's rules
(policy.py).

Nothing here imports Tornado.
"""

from __future__ import annotations

from typing import Any

from gateway.realtime import codes, commands
from gateway.realtime.broker import Unrecoverable
from gateway.realtime.codes import ErrorReply
from gateway.realtime.commands import Caller
from gateway.realtime.context import SessionContext
from gateway.realtime.hooks import rpc_payload, send_payload
from gateway.realtime.protocol import ClientInfo, Raw, raw


async def publish(
    ctx: SessionContext, caller: Caller, req: commands.PublishRequest, subscribed: bool
) -> dict[str, Any]:
    rules = ctx.namespaces.require(req.channel)
    data = await rules.publish.authorize(caller, req, subscribed)
    info = ClientInfo(caller.user, caller.client, caller.info)
    await ctx.registry.publish(req.channel, raw(data), info=info)
    return {}


async def presence(
    ctx: SessionContext, caller: Caller, req: commands.ChannelRequest, subscribed: bool
) -> dict[str, Any]:
    ctx.namespaces.require(req.channel).presence.check(caller, subscribed)
    members = await ctx.presence.get(req.channel)
    return {"presence": {cid: info.as_dict() for cid, info in members.items()}}


async def presence_stats(
    ctx: SessionContext, caller: Caller, req: commands.ChannelRequest, subscribed: bool
) -> dict[str, Any]:
    ctx.namespaces.require(req.channel).presence.check(caller, subscribed)
    clients, users = await ctx.presence.stats(req.channel)
    return {"num_clients": clients, "num_users": users}


async def history(
    ctx: SessionContext, caller: Caller, req: commands.HistoryRequest, subscribed: bool
) -> dict[str, Any]:
    ctx.namespaces.require(req.channel).history.check(caller, subscribed)
    try:
        pubs, top = await ctx.broker.history(req.channel, req.since, req.limit, req.reverse)
    except Unrecoverable:
        raise ErrorReply(codes.UNRECOVERABLE_POSITION) from None
    result: dict[str, Any] = {"epoch": top.epoch}
    if top.offset:
        result["offset"] = top.offset
    if pubs:
        result["publications"] = [Raw(p.encoded()) for p in pubs]
    return result


async def rpc(ctx: SessionContext, caller: Caller, req: commands.RpcRequest) -> dict[str, Any]:
    path, hooks = ctx.cfg.hooks.rpc, ctx.hooks
    if not path or hooks is None:
        raise ErrorReply(codes.NOT_AVAILABLE)  # Centrifugo's answer without an RPC handler
    answer = await hooks.call(path, "rpc", rpc_payload(caller, req))
    return {"data": raw(answer["data"])} if "data" in answer else {}


async def send(ctx: SessionContext, caller: Caller, req: commands.SendRequest) -> bool:
    """Tell the app's send hook; False when there is none (the caller closes with 3508)."""
    path, hooks = ctx.cfg.hooks.send, ctx.hooks
    if not path or hooks is None:
        return False
    await hooks.call(path, "send", send_payload(caller, req))
    return True

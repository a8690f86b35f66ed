"""Driving the bundled nextjs-app over HTTP, as a browser would."""

from __future__ import annotations

import http.client
import re
import uuid

from support.procs import GatewayProcess


def sign_in(gw: GatewayProcess, name: str, next_path: str = "/live") -> str:
    """Post the sign-in form (a Server Action) and return the session cookie it sets."""
    status, headers, _ = post_sign_in(gw, name, next_path)
    assert status in (200, 303), status
    cookie = next(c for c in headers.get_all("Set-Cookie") if c.startswith("gw_session="))
    return cookie.split(";", 1)[0]


def post_sign_in(
    gw: GatewayProcess, name: str, next_path: str, *, javascript: bool = False
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Post the sign-in form and return the whole response. Without JavaScript the browser
    posts the form naming the action (Next answers 303 with a Location); with it, React posts
    the same FormData encoded as the action's one argument, with a Next-Action header (Next
    answers with an RSC payload and X-Action-Redirect: <target>;push)."""
    page = gw.request("/signin")[2]
    action = re.search(rb'name="\$ACTION_ID_([0-9a-f]+)"', page)
    assert action, "no sign-in form"
    action_id = action.group(1).decode()
    headers = {"Origin": f"http://127.0.0.1:{gw.port}"}
    if javascript:
        # React's encodeReply([formData]): the FormData's entries as `_1_<name>`, then the
        # argument list "0" referring to them ($K1); the server resolves $K1 from the entries
        # it has already read, so "0" comes last, as React sends it.
        fields = {"_1_name": name, "_1_next": next_path, "0": '["$K1"]'}
        headers |= {"Next-Action": action_id, "Accept": "text/x-component"}
    else:
        fields = {f"$ACTION_ID_{action_id}": "", "name": name, "next": next_path}
    boundary = uuid.uuid4().hex
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        )
        + f"--{boundary}--\r\n"
    )
    headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    return gw.request("/signin", method="POST", body=body.encode(), headers=headers)

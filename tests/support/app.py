"""Driving the bundled nextjs-app over HTTP, as a browser would."""

from __future__ import annotations

import re
import uuid

from support.procs import GatewayProcess


def sign_in(gw: GatewayProcess, name: str, next_path: str = "/live") -> str:
    """Post the sign-in form (a Server Action) and return the session cookie it sets."""
    page = gw.request("/signin")[2]
    action = re.search(rb'name="(\$ACTION_ID_[0-9a-f]+)"', page)
    assert action, "no sign-in form"
    boundary = uuid.uuid4().hex
    fields = {action.group(1).decode(): "", "name": name, "next": next_path}
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        )
        + f"--{boundary}--\r\n"
    )
    status, headers, _ = gw.request(
        "/signin",
        method="POST",
        body=body.encode(),
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Origin": f"http://127.0.0.1:{gw.port}",
        },
    )
    assert status in (200, 303), status
    cookie = next(c for c in headers.get_all("Set-Cookie") if c.startswith("gw_session="))
    return cookie.split(";", 1)[0]

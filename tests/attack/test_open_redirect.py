"""The sign-in form's `next` only ever sends the user to a path on this site: an attacker's link
(`/signin?next=//evil.example/x`) must not turn our sign-in into a redirect to theirs. Both ways
a browser submits the form are checked: without JavaScript (a 303 and its Location) and with it
(the Server Action's X-Action-Redirect, which the client router follows, off-site included)."""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit

import pytest
from support.app import post_sign_in
from support.procs import GatewayProcess

OFF_SITE = [
    "//evil.example/x",
    "https://evil.example",
    "/\\evil.example",
    "/%2F%2Fevil",
    "/%5Cevil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "javascript:alert(1)",
    " //evil.example",
    "",
]
WAYS = ["form", "javascript"]


def redirect_target(gw: GatewayProcess, next_path: str, way: str) -> str:
    status, headers, _ = post_sign_in(gw, "Mallory", next_path, javascript=way == "javascript")
    if way == "javascript":
        assert status == 200, status
        target, _, mode = headers["X-Action-Redirect"].rpartition(";")
        assert mode in ("push", "replace"), headers
        return target
    assert status == 303, status
    return headers["Location"]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("next_path", OFF_SITE)
def test_sign_in_never_redirects_off_site(
    next_gateway: GatewayProcess, next_path: str, way: str
) -> None:
    target = redirect_target(next_gateway, next_path, way)
    origin = next_gateway.url("")
    assert urlsplit(urljoin(origin, target)).netloc == urlsplit(origin).netloc, target
    assert target == "/live"  # the default after sign-in, not a mangled variant of the input


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("next_path", ["/chat", "/chat?room=games", "/notes#new"])
def test_sign_in_goes_back_to_a_page_of_this_site(
    next_gateway: GatewayProcess, next_path: str, way: str
) -> None:
    assert redirect_target(next_gateway, next_path, way) == next_path


@pytest.mark.parametrize(
    ("next_path", "carried"), [("//evil.example/x", "/live"), ("/chat", "/chat")]
)
def test_the_form_only_carries_a_same_site_next(
    next_gateway: GatewayProcess, next_path: str, carried: str
) -> None:
    page = next_gateway.request(f"/signin?next={quote(next_path, safe='/')}")[2].decode()
    hidden = re.search(r'<input type="hidden" name="next" value="([^"]*)"', page)
    assert hidden, page
    assert hidden.group(1) == carried

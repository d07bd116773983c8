"""What the unsubscribe endpoint answers. Pure: method, token, secret and
clock in; status, page and the fact to record (if any) out.

- ``GET /u/TOKEN``: a confirmation page with a button; records nothing
  (link scanners and previews follow GETs).
- ``POST /u/TOKEN`` (RFC 8058 one-click, or the page's button): a valid
  token becomes UnsubscribeRequested (via http), answered 200 once the
  broker has it.
- A forged, altered, malformed or expired token: 400, nothing recorded.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from schemas import UnsubscribeRequested

from .token import ONE_CLICK, TokenError, read_token, unsubscribe_event


@dataclass(frozen=True)
class Answer:
    status: int
    title: str
    body: str  # HTML of the page's body (escaped)
    event: UnsubscribeRequested | None = None
    reason: str = ""  # why a token was refused (malformed | forged | expired)

    def page(self) -> str:
        return (
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"robots\" content=\"noindex\">"
            f"<title>{html.escape(self.title)}</title></head>"
            "<body style=\"font-family: sans-serif; max-width: 36em; margin: 3em auto\">"
            f"<h1>{html.escape(self.title)}</h1>{self.body}</body></html>"
        )


def _what(list_id: str, tenant: str) -> str:
    if list_id:
        return f"the list <b>{html.escape(list_id)}</b>" + (
            f" of {html.escape(tenant)}" if tenant else "")
    return "these mailings" + (f" of {html.escape(tenant)}" if tenant else "")


def answer(method: str, token: str, secret: bytes, now: float) -> Answer:
    """The answer to ``method`` (GET or POST) on ``/u/<token>``."""
    try:
        claims = read_token(secret, token, now)
    except TokenError as exc:
        return Answer(400, "Unsubscribe link not valid", f"<p>{html.escape(str(exc))}.</p>",
                      reason=exc.reason)
    what = _what(claims.list_id, claims.tenant)
    who = html.escape(claims.address)
    if method == "POST":
        event = unsubscribe_event(claims, "http", now)
        return Answer(200, "You are unsubscribed",
                      f"<p>{who} will receive no more mail from {what}.</p>", event=event)
    name, _, value = ONE_CLICK.partition("=")
    form = (
        f"<form method=\"post\"><input type=\"hidden\" name=\"{name}\" value=\"{value}\">"
        "<button type=\"submit\">Unsubscribe</button></form>"
    )
    return Answer(200, "Unsubscribe?",
                  f"<p>Stop sending mail from {what} to {who}?</p>{form}")

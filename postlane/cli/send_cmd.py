"""``postlane send``: publish one SendRequested (and optionally wait)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from postlane.publisher import Publisher, PublishError, attachment
from schemas import InvalidEvent
from streams.client import BrokerUnavailable, ensure_topics

from .common import fail, settings

CONNECT_TIMEOUT = 5.0  # seconds for a broker to answer before send says there is none


@click.command()
@click.option("--from", "from_", required=True, help='"Name" <addr> or addr')
@click.option("--to", multiple=True, required=True)
@click.option("--cc", multiple=True)
@click.option("--bcc", multiple=True)
@click.option("--reply-to", default="")
@click.option("--subject", default="")
@click.option("--text", default="")
@click.option("--html", default="")
@click.option("--attach", multiple=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--header", multiple=True, help="Name: value")
@click.option("--tenant", default="")
@click.option("--kind", type=click.Choice(["transactional", "mass"]), default="transactional")
@click.option("--idempotency-key", default="")
@click.option("--thread-ref", default="")
@click.option("--list-id", default="", help="mass mail: the list (one-click unsubscribe names it)")
@click.option("--campaign", default="", help="the campaign (Feedback-ID header, reports)")
@click.option("--send-at", default="", metavar="WHEN",
              help="hold until then: ISO 8601 (2026-11-23T09:00+01:00; no zone: UTC) "
                   "or unix seconds")
@click.option("--wait", is_flag=True, help="wait for a final status and print it")
@click.option("--timeout", default=60.0, show_default=True, help="seconds --wait waits")
def send(
    from_: str, to: tuple[str, ...], cc: tuple[str, ...], bcc: tuple[str, ...], reply_to: str,
    subject: str, text: str, html: str, attach: tuple[str, ...], header: tuple[str, ...],
    tenant: str, kind: str, idempotency_key: str, thread_ref: str, list_id: str, campaign: str,
    send_at: str, wait: bool, timeout: float,
) -> None:
    """Publish a mail to send; prints its message id."""
    s = settings()
    headers: dict[str, str] = {}
    for h in header:
        name, sep, value = h.partition(":")
        if not sep:
            fail(f"--header {h!r} must be 'Name: value'")
        headers[name.strip()] = value.strip()
    fields = dict(
        cc=list(cc), bcc=list(bcc), reply_to=reply_to, subject=subject, text=text, html=html,
        attachments=[attachment(p) for p in attach], headers=headers, tenant=tenant, kind=kind,
        idempotency_key=idempotency_key, thread_ref=thread_ref, send_at=parse_when(send_at),
        list_id=list_id, campaign=campaign,
    )
    try:
        # the publisher first: its connection check says "no broker" within
        # CONNECT_TIMEOUT (ensure_topics first waited out kafka-python's 30 s)
        with Publisher(settings=s, connect_timeout=CONNECT_TIMEOUT) as pub:
            ensure_topics(s, connect_timeout=CONNECT_TIMEOUT)
            mid = pub.send(from_=from_, to=list(to), **fields)
    except InvalidEvent as exc:
        fail("; ".join(exc.problems))
    except (PublishError, BrokerUnavailable) as exc:
        fail(str(exc), 3)
    if not wait:
        click.echo(mid)
        return
    from postlane.statusview import wait_final

    status = wait_final(s, mid, timeout)
    if status is None:
        # the id on stdout as without --wait (a script keeps it to ask later); why on stderr
        click.echo(mid)
        click.echo(f"{mid}: no final status within {timeout:.0f}s; it is published, ask "
                   f"later with: postlane status {mid}", err=True)
        sys.exit(4)
    click.echo(f"{mid} {status['state']}" + (f": {status['reason']}" if status.get("reason")
                                              else ""))
    if status["state"] != "sent":
        sys.exit(1)


def parse_when(text: str) -> float:
    """``--send-at``: ISO 8601 (no zone: UTC) or unix seconds; "" is now (0)."""
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--send-at {text!r} is neither ISO 8601 (2026-11-23T09:00) nor unix seconds")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


COMMANDS = [send]

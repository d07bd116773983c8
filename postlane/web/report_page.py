"""The console's deliverability report (``/report``): the figures of
``postlane report deliverability``, from ``reportops.report()`` (the same
function, the same rows), with its bar chart (``/report/plot.png``).

Query: ``by`` (server, domain, reason, tenant, day), ``since`` / ``until``
(a date or time in ISO 8601, UTC unless it says otherwise, or unix
seconds). The topics are read from offset 0 on a thread, so a large log
takes as long as the command does.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from postlane import reportops
from streams.client import BrokerUnavailable


def parse_time(value: str) -> float | None:
    """``2026-11-22``, ``2026-11-22T10:00``, unix seconds; None when empty.
    Raises ValueError in words."""
    v = value.strip()
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither a date (2026-11-22), an ISO 8601 time nor "
                         f"unix seconds") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def query(request: web.Request) -> tuple[str, float | None, float | None, str]:
    """``(by, since, until, problem)`` from the query string."""
    by = request.query.get("by", "server")
    problem = ""
    if by not in reportops.GROUPS:
        problem, by = f"by {by!r} must be one of {', '.join(reportops.GROUPS)}", "server"
    try:
        lo = parse_time(request.query.get("since", ""))
        hi = parse_time(request.query.get("until", ""))
    except ValueError as exc:
        return by, None, None, str(exc)
    return by, lo, hi, problem


async def _rows(request: web.Request, by: str, lo: float | None, hi: float | None
                ) -> list[reportops.Row]:
    from .app import CONSOLE

    return await asyncio.to_thread(reportops.report, request.app[CONSOLE].settings, by, lo, hi)


async def report_page(request: web.Request) -> web.Response:
    from .app import render

    by, lo, hi, problem = query(request)
    rows: list[dict[str, Any]] = []
    total: dict[str, Any] | None = None
    if not problem:
        try:
            found = await _rows(request, by, lo, hi)
        except BrokerUnavailable as exc:
            problem = str(exc)
        else:
            rows = [r.to_dict() for r in found]
            total = reportops.totals(found).to_dict()
    return render(request, "report.html", status=400 if problem and not rows else 200,
                  by=by, groups=reportops.GROUPS, counts=reportops.COUNTS, rows=rows,
                  total=total, problem=problem, since=request.query.get("since", ""),
                  until=request.query.get("until", ""),
                  plot_query=request.query_string)


async def report_plot(request: web.Request) -> web.Response:
    by, lo, hi, problem = query(request)
    if problem:
        raise web.HTTPBadRequest(text=problem + "\n")
    try:
        rows = await _rows(request, by, lo, hi)
    except BrokerUnavailable as exc:
        raise web.HTTPServiceUnavailable(text=str(exc) + "\n") from None

    def draw() -> bytes:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "report.png"
            reportops.plot(rows, by, str(path))
            return path.read_bytes()

    return web.Response(body=await asyncio.to_thread(draw), content_type="image/png")


def register(app: web.Application) -> None:
    """The routes, and the page in the console's navigation."""
    from .app import JINJA

    app.router.add_get("/report", report_page)
    app.router.add_get("/report/plot.png", report_plot)
    env = app[JINJA]
    nav: tuple[tuple[str, str], ...] = tuple(env.globals["nav"])  # type: ignore[arg-type]
    env.globals["nav"] = (*nav, ("/report", "Report"))

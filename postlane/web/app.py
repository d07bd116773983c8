"""The web console (HTTP edge): aiohttp handlers that check the session and
the CSRF token, ask ``model`` for a page, render it with Jinja2, and write
only through the events the CLI writes: config events
(``configops.publish_config``), queue commands (``queueops.issue``) and
suppression edits (SuppressionEdited on ``bounces``). The one-click
unsubscribe routes (``processors/unsubscribe/web.py``) are mounted as they
are.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from postlane import configops, queueops
from processors.delivery.probe import test_connection
from schemas import OutgoingServerRemoved, SuppressionEdited
from schemas.bounces import SUPPRESSION_TYPES
from streams.client import publish
from streams.settings import Settings
from streams.topics import BOUNCES

from . import auth, forms, model, report_page
from .feed import Feed

log = logging.getLogger("postlane.web")
HERE = Path(__file__).parent
COOKIE = "postlane_session"
PRE_COOKIE = "postlane_login"
PUBLIC = ("/login", "/static/", "/u/", "/healthz", "/favicon.ico")
NAV = (("/", "Overview"), ("/queue", "Queue"), ("/servers", "Outgoing servers"),
       ("/incoming", "Incoming servers"), ("/dkim", "DKIM keys"), ("/aliases", "Aliases"),
       ("/settings", "Settings"),
       ("/limits", "Limits"), ("/suppressions", "Suppressions"),
       ("/dead-letters", "Dead letters"))



@dataclass
class Console:
    """What the handlers share: settings, the view, sessions, users file."""

    settings: Settings
    users_file: Path
    state: model.ConsoleState = field(default_factory=model.ConsoleState)
    sessions: auth.Sessions = field(default_factory=lambda: auth.Sessions(12))
    throttle: auth.LoginThrottle = field(default_factory=auth.LoginThrottle)
    flashes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    command_timeout: float = 20.0


TITLES = {"aliases": "Aliases", "settings": "Settings", "tenants": "Tenants' daily limits",
          "domains": "Recipient domains' pacing", "dkim": "DKIM signing keys",
          "incoming": "Incoming servers"}
BACK = {"tenants": "/limits", "domains": "/limits"}
CONSOLE = web.AppKey("console", Console)
FEED = web.AppKey("feed", Feed)
JINJA = web.AppKey("jinja", jinja2.Environment)
SESSION = web.RequestKey("session", auth.Session)


def users_file(s: Settings) -> Path:
    return Path(s.web_users_file) if s.web_users_file else Path(s.data_dir) / "web-users"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals["nav"] = NAV
    env.filters["when"] = model.when
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


@web.middleware
async def security(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
    """Nothing without a session but the login and unsubscribe pages; every
    POST carries the session's CSRF token; no page is cached or framed."""
    c: Console = request.app[CONSOLE]
    path = request.path
    if not path.startswith(PUBLIC):
        session = c.sessions.get(request.cookies.get(COOKIE), time.time())
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
            raise web.HTTPForbidden(text="log in first\n")
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not auth.csrf_ok(session.csrf, str(form.get("csrf") or "")):
                raise web.HTTPForbidden(text="the form's CSRF token is missing or wrong: "
                                        "reload the page and send it again\n")
    response = await handler(request)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'")
    return response


def render(request: web.Request, template: str, status: int = 200, **ctx: Any
           ) -> web.Response:
    c: Console = request.app[CONSOLE]
    session: auth.Session | None = request.get(SESSION)
    token = request.cookies.get(COOKIE, "")
    flashes = c.flashes.pop(token, []) if session is not None else []
    body = request.app[JINJA].get_template(template).render(
        session=session, csrf=session.csrf if session else "", path=request.path,
        flashes=flashes, **ctx)
    return web.Response(text=body, content_type="text/html", status=status)


def flash(request: web.Request, kind: str, text: str) -> None:
    c: Console = request.app[CONSOLE]
    c.flashes.setdefault(request.cookies.get(COOKIE, ""), []).append((kind, text))


def _cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
            max_age: int) -> None:
    c: Console = request.app[CONSOLE]
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="Strict",
                        secure=c.settings.web_public_url.startswith("https://"), path="/")


# --- login ---------------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    # one login token per browser: a second tab (or the favicon's redirect)
    # must not invalidate the form already shown
    pre = request.cookies.get(PRE_COOKIE) or auth.secrets.token_urlsafe(24)
    resp = render(request, "login.html", pre=pre, next=request.query.get("next", "/"),
                  error="")
    _cookie(request, resp, PRE_COOKIE, pre, 3600)
    return resp


def _safe_next(value: str) -> str:
    """A local path only (no other host: ``//x``, ``/\\x`` and schemes are refused)."""
    ok = value.startswith("/") and not value.startswith("//") and "\\" not in value \
        and not any(c in value for c in "\r\n")
    return value if ok else "/"


async def login(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    form = await request.post()
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not auth.csrf_ok(pre, str(form.get("csrf") or "")):
        raise web.HTTPForbidden(text="the login form expired: reload it and try again\n")
    name, password = str(form.get("username") or ""), str(form.get("password") or "")
    keys = [f"user:{name}", f"addr:{request.remote}"]
    wait = c.throttle.wait(keys, time.time())
    if wait > 0:
        log.warning("console login of %r from %s refused for %.0f s (too many failures)",
                    name, request.remote, wait)
        return _login_refused(request, str(form.get("next") or "/"), 429,
                              f"too many failed logins for this user name or from this "
                              f"address: try again in {auth.retry_after(wait)} s",
                              {"Retry-After": auth.retry_after(wait)})
    try:
        users = await asyncio.to_thread(auth.read_users, c.users_file)
    except auth.UserFileError as exc:
        users, problem = {}, str(exc)
    else:
        problem = ""
    stored = users.get(name)
    ok = stored is not None and await asyncio.to_thread(auth.verify_password, password, stored)
    if not ok:
        log.info("console login refused for %r from %s", name, request.remote)
        if users:  # no users yet (or an unreadable file) is not a guess
            c.throttle.failed(keys, time.time())
        return _login_refused(request, str(form.get("next") or "/"), 401,
                              problem or ("no such user or wrong password" if users else
                                          f"no users yet: run `postlane web adduser NAME` "
                                          f"(users file {c.users_file})"))
    c.throttle.succeeded(keys[0])
    return _open_session(request, name, _safe_next(str(form.get("next") or "/")))


def _login_refused(request: web.Request, next_: str, status: int, error: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    new_pre = auth.secrets.token_urlsafe(24)
    resp = render(request, "login.html", status=status, pre=new_pre, next=next_, error=error)
    resp.headers.update(headers or {})
    _cookie(request, resp, PRE_COOKIE, new_pre, 3600)
    return resp


def _open_session(request: web.Request, user: str, to: str) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    token, _ = c.sessions.open(user, time.time())
    resp = web.Response(status=303, headers={"Location": to})
    _cookie(request, resp, COOKIE, token, int(c.sessions.seconds))
    resp.del_cookie(PRE_COOKIE, path="/")
    log.info("console login of %s from %s", user, request.remote)
    return resp


async def login_once(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    if not c.sessions.use_once(request.match_info["token"], time.time()):
        return web.Response(status=403, text="this login link was used or has expired: run "
                            "postlane dev again, or log in with a user "
                            "(`postlane web adduser NAME`)\n")
    return _open_session(request, "dev", "/")


async def logout(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    c.sessions.close(request.cookies.get(COOKIE))
    resp = web.Response(status=303, headers={"Location": "/login"})
    resp.del_cookie(COOKIE, path="/")
    return resp


# --- pages ---------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    feed: Feed = request.app[FEED]
    return render(request, "overview.html",
                  o=model.overview(c.state, time.time(), feed.processors),
                  ready=feed.ready.is_set())


async def queue_page(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    f = model.QueueFilter.from_query(dict(request.query), time.time())
    q = model.queue(c.state, f)
    base = {k: v for k, v in request.query.items() if k != "page"}
    return render(request, "queue.html", q=q, query=dict(request.query),
                  base=urlencode(base), commands=("retry", "send_now", "cancel", "ack"))


async def queue_command(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    form = await request.post()
    command = str(form.get("command") or "")
    ids = [str(v) for v in form.getall("id", [])]
    back = _safe_next(str(form.get("back") or "/queue"))
    if command not in queueops.OWNERS or not ids:
        flash(request, "error", "choose a command and at least one mail")
        raise web.HTTPSeeOther(back)
    session: auth.Session = request[SESSION]
    answers = await asyncio.to_thread(queueops.issue, c.settings, command, ids,
                                      f"{session.user}@console", "", c.command_timeout)
    for a in answers:
        flash(request, "ok" if a.ok else "error", a.line(c.command_timeout))
    raise web.HTTPSeeOther(back)


async def message_page(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    m = model.message(c.state, request.match_info["mid"])
    if m is None:
        return render(request, "missing.html", status=404,
                      what=f"no mail {request.match_info['mid']!r} in the status log")
    return render(request, "message.html", m=m, commands=("retry", "send_now", "cancel", "ack"))


async def servers_page(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    rows = sorted(c.state.config.servers.values(), key=lambda s: (s.priority, s.name))
    return render(request, "servers.html", servers=rows)


async def server_form(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    name = request.match_info.get("name")
    server = c.state.config.servers.get(name) if name else None
    if name and server is None:
        return render(request, "missing.html", status=404, what=f"no server named {name!r}")
    return render(request, "server_form.html", fields=forms.SERVER_FIELDS,
                  values=forms.server_form_values(server), errors={}, general=[],
                  editing=name or "", report=None)


async def server_save(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    form = {k: str(v) for k, v in (await request.post()).items()}
    editing = form.get("editing", "")
    name = form.get("name", "").strip()
    existing = c.state.config.servers.get(name)
    result = forms.server_from_form(form, existing if editing else None)
    if result.ok and not editing and existing is not None:
        result = forms.FormResult(errors={"name": [f"server {name!r} exists; edit it instead"]})
    if result.ok and form.get("action") == "test":
        assert result.event is not None
        report = await test_connection(result.event, form.get("send_to") or None,
                                       form.get("on_behalf") or None, timeout=10.0)
        return render(request, "server_form.html", fields=forms.SERVER_FIELDS, values=form,
                      errors={}, general=[], editing=editing, report=report)
    if not result.ok or result.event is None:
        return render(request, "server_form.html", status=422, fields=forms.SERVER_FIELDS,
                      values=form, errors=result.errors, general=result.general,
                      editing=editing, report=None)
    event = result.event
    try:
        await asyncio.to_thread(configops.publish_config, c.settings, [(event.key, event)])
    except Exception as exc:  # noqa: BLE001 - the broker or a key refused: say it on the form
        return render(request, "server_form.html", status=503, fields=forms.SERVER_FIELDS,
                      values=form, errors={}, general=[str(exc)], editing=editing, report=None)
    await _until(lambda: c.state.config.servers.get(event.name) == event)
    flash(request, "ok", f"published {event.type} {event.key}")
    raise web.HTTPSeeOther("/servers")


async def server_remove(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    name = request.match_info["name"]
    if name not in c.state.config.servers:
        flash(request, "error", f"no server named {name!r}")
        raise web.HTTPSeeOther("/servers")
    event = OutgoingServerRemoved(name=name)
    await asyncio.to_thread(configops.publish_config, c.settings, [(event.key, event)])
    await _until(lambda: name not in c.state.config.servers)
    flash(request, "ok", f"published {event.type} {event.key}")
    raise web.HTTPSeeOther("/servers")


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until the feed folded what was just published (so the next page
    shows it), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def config_page(request: web.Request, form: dict[str, str] | None = None,
                      result: forms.FormResult | None = None) -> web.Response:
    """Aliases (a table and a form to add or replace one) and settings (a
    form with the live values)."""
    c: Console = request.app[CONSOLE]
    view = c.state.config
    kind = request.match_info.get("kind") or request.path.strip("/")
    from postlane.configfile import values

    if kind == "settings":
        rows = [values(view.settings)]
        shown = form if form is not None else {k: str(v) for k, v in rows[0].items()}
    else:
        entries: dict[str, Any] = getattr(view, kind)
        rows = [values(entries[k]) for k in sorted(entries)]
        edit = request.query.get("edit", "")
        shown = form or forms.initial(kind, entries.get(edit) or entries.get(edit.lower()))
    if result is not None and kind == "dkim":  # a key pasted by mistake is not shown back
        for name in ("key_env", "key_file"):
            if any("never entered here" in e for e in result.errors.get(name, [])):
                shown[name] = ""
    return render(request, "config.html", status=422 if result else 200, kind=kind,
                  rows=rows, fields=forms.fields_of(kind), values=shown,
                  errors=result.errors if result else {},
                  general=result.general if result else [], title=TITLES[kind])


async def config_save(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    kind = request.match_info["kind"]
    form = {k: str(v) for k, v in (await request.post()).items()}
    result = forms.config_from_form(kind, form)
    if not result.ok:
        return await config_page(request, form, result)
    event = result.event
    try:
        await asyncio.to_thread(configops.publish_config, c.settings, [(event.key, event)])
    except Exception as exc:  # noqa: BLE001 - the broker or the key refused: say it on the form
        refused = forms.FormResult(general=[str(exc)])
        if kind == "dkim":  # config apply's check of the key: next to the reference given
            refused = forms.FormResult(errors={"key_file" if event.key_file else "key_env":
                                               [str(exc)]})
        return await config_page(request, form, refused)
    await _until(lambda: event in _config_events(c.state.config, kind))
    flash(request, "ok", f"published {event.type} {event.key}")
    raise web.HTTPSeeOther(BACK.get(kind, "/" + kind))


def _config_events(view: Any, kind: str) -> list[Any]:
    return [view.settings] if kind == "settings" else list(getattr(view, kind).values())


async def config_remove(request: web.Request) -> web.StreamResponse:
    """Remove an alias, a tenant's limit or a domain's pacing (its Removed event)."""
    from processors.config.view import CONFIG_KINDS

    c: Console = request.app[CONSOLE]
    kind = next(k for k in CONFIG_KINDS if k.field == request.match_info["kind"])
    ident = request.match_info["ident"]
    key = ident.lower() if kind.fold_case else ident
    back = BACK.get(kind.field, "/" + kind.field)
    if key not in getattr(c.state.config, kind.field):
        flash(request, "error", f"no {kind.id_field} {ident!r}")
        raise web.HTTPSeeOther(back)
    event: Any = kind.removed(**{kind.id_field: ident})  # type: ignore[arg-type]
    await asyncio.to_thread(configops.publish_config, c.settings, [(event.key, event)])
    await _until(lambda: key not in getattr(c.state.config, kind.field))
    flash(request, "ok", f"published {event.type} {event.key}")
    raise web.HTTPSeeOther(back)


async def incoming_page(request: web.Request, form: dict[str, Any] | None = None,
                        result: forms.FormResult | None = None, report: Any = None,
                        tested: str = "", status: int = 200) -> web.Response:
    """The incoming servers with the fetcher's last report on each, a Test
    connection per server, and the form to add, replace or test one."""
    c: Console = request.app[CONSOLE]
    if form is None:
        form = forms.initial("incoming", c.state.config.incoming.get(
            request.query.get("edit", "")))
    return render(request, "incoming.html", status=status, rows=model.incoming(c.state),
                  report=report, tested=tested, kind="incoming",
                  fields=forms.fields_of("incoming"), values=form,
                  errors=result.errors if result else {},
                  general=result.general if result else [])


async def incoming_save(request: web.Request) -> web.StreamResponse:
    """Save (IncomingServerConfigured, built as ``config apply`` builds it)
    or, with ``action=test``, test the form's values without saving them."""
    from processors.fetcher.probe import test_incoming

    c: Console = request.app[CONSOLE]
    form = {k: str(v) for k, v in (await request.post()).items()}
    result = forms.config_from_form("incoming", form)
    if not result.ok:
        return await incoming_page(request, form, result, status=422)
    event = result.event
    if form.get("action") == "test":
        report = await test_incoming(event, timeout=10.0)
        return await incoming_page(request, form, report=report, tested=event.name)
    try:
        await asyncio.to_thread(configops.publish_config, c.settings, [(event.key, event)])
    except Exception as exc:  # noqa: BLE001 - the broker refused: say it on the form
        return await incoming_page(request, form, forms.FormResult(general=[str(exc)]),
                                   status=503)
    await _until(lambda: c.state.config.incoming.get(event.name) == event)
    flash(request, "ok", f"published {event.type} {event.key}")
    raise web.HTTPSeeOther("/incoming")


async def incoming_test(request: web.Request) -> web.Response:
    """Test connection of a configured incoming server: connect, TLS, log
    in, open the folder, IDLE (``postlane incoming test``'s probe and
    sentences)."""
    from processors.fetcher.probe import test_incoming

    c: Console = request.app[CONSOLE]
    name = request.match_info["name"]
    server = c.state.config.incoming.get(name)
    if server is None:
        return render(request, "missing.html", status=404,
                      what=f"no incoming server named {name!r}")
    report = await test_incoming(server, timeout=10.0)
    return await incoming_page(request, report=report, tested=name)


async def limits_page(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    return render(request, "limits.html", lim=model.limits(c.state, time.time()))


async def suppressions_page(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    q = request.query.get("q", "").strip().lower()
    rows = [r for r in model.suppression_rows(c.state) if q in r["address"]]
    return render(request, "suppressions.html", rows=rows[:1000], count=len(rows), q=q)


async def suppression_remove(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[CONSOLE]
    form = await request.post()
    session: auth.Session = request[SESSION]
    stype = str(form.get("type") or "")
    if stype not in SUPPRESSION_TYPES:
        flash(request, "error", f"unknown suppression type {stype!r}")
        raise web.HTTPSeeOther("/suppressions")
    try:
        event = SuppressionEdited(address=str(form.get("address") or ""), action="remove",
                                  suppression_type=stype, tenant=str(form.get("tenant") or ""),
                                  list_id=str(form.get("list_id") or ""),
                                  reason="removed in the console", by=session.user)
    except ValueError as exc:
        flash(request, "error", str(exc))
        raise web.HTTPSeeOther("/suppressions") from None
    await asyncio.to_thread(publish, c.settings, BOUNCES, [(event.address.lower(), event)])
    flash(request, "ok", f"{event.address}: removal of the {stype} suppression published")
    raise web.HTTPSeeOther("/suppressions")


async def dead_letters_page(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    return render(request, "dead_letters.html", d=model.dead_letters(c.state))


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(console: Console, feed: Feed, unsubscribe: web.Application | None = None
             ) -> web.Application:
    app = web.Application(middlewares=[security], client_max_size=1024 * 1024)
    app[CONSOLE] = console
    app[FEED] = feed
    app[JINJA] = _env()
    r = app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_get("/login/once/{token}", login_once)
    r.add_post("/logout", logout)
    r.add_get("/", overview)
    r.add_get("/queue", queue_page)
    r.add_post("/queue/command", queue_command)
    r.add_get("/message/{mid}", message_page)
    r.add_get("/servers", servers_page)
    r.add_get("/servers/new", server_form)
    r.add_get("/servers/edit/{name}", server_form)
    r.add_post("/servers/save", server_save)
    r.add_post("/servers/remove/{name}", server_remove)
    r.add_get("/incoming", incoming_page)
    r.add_post("/incoming/test/{name}", incoming_test)
    r.add_post("/incoming/save", incoming_save)
    for path in ("/aliases", "/settings"):
        r.add_get(path, config_page)
    r.add_get("/{kind:tenants|domains|dkim}", config_page)
    r.add_post("/{kind:aliases|settings|tenants|domains|dkim}/save", config_save)
    r.add_post("/{kind:aliases|tenants|domains|incoming|dkim}/remove/{ident}", config_remove)
    r.add_get("/limits", limits_page)
    r.add_get("/suppressions", suppressions_page)
    r.add_post("/suppressions/remove", suppression_remove)
    r.add_get("/dead-letters", dead_letters_page)
    report_page.register(app)  # /report (issue 18)
    r.add_static("/static/", HERE / "static")
    r.add_get("/favicon.ico", favicon)
    if unsubscribe is not None:  # the one-click unsubscribe handlers, as they are
        for route in unsubscribe.router.routes():
            if route.method in ("GET", "POST") and route.resource is not None:
                r.add_route(route.method, route.resource.canonical, route.handler)
    else:
        r.add_get("/healthz", healthz)
    return app


# --- running it ----------------------------------------------------------------------------------


class ConsoleServer:
    """The console on its own thread and event loop (``postlane dev``, tests)
    or on the caller's (``run`` for ``postlane web``)."""

    def __init__(self, settings: Settings, with_unsubscribe: bool = True) -> None:
        self.settings = settings
        self.console = Console(settings, users_file(settings),
                               state=model.ConsoleState(timezone=settings.limit_timezone,
                                                        day_start=settings.limit_day_start),
                               sessions=auth.Sessions(settings.web_session_hours))
        self.with_unsubscribe = with_unsubscribe
        self.loop = asyncio.new_event_loop()
        self.thread: threading.Thread | None = None
        self._close_publisher: Callable[[], None] | None = None
        self.runner: web.AppRunner | None = None
        self.feed: Feed | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def login_link(self) -> str:
        """A one-time login URL (ten minutes)."""
        token = self.console.sessions.one_time(time.time())
        return f"{self.url}/login/once/{token}"

    async def _up(self) -> None:
        unsub = None
        if self.with_unsubscribe:
            from processors.unsubscribe.web import kafka_publisher
            from processors.unsubscribe.web import make_app as unsubscribe_app
            from streams.secrets import unsubscribe_secret

            s = self.settings
            secret = unsubscribe_secret(s.unsubscribe_secret_env, s.unsubscribe_secret_file,
                                        s.data_dir)
            publish_unsub, self._close_publisher = kafka_publisher(s)
            unsub = unsubscribe_app(secret, publish_unsub)
        self.feed = Feed(self.settings, self.console.state)
        self.feed.start()
        self.runner = web.AppRunner(make_app(self.console, self.feed, unsub), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.settings.web_host, self.settings.web_port).start()

    async def _down(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        if self._close_publisher is not None:
            self._close_publisher()

    def start(self) -> ConsoleServer:
        """Start on a thread of its own; raises OSError when the port is taken."""
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-web",
                                       daemon=True)
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._up(), self.loop).result(15)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._down(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


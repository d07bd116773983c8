"""The console's pure parts (model, forms, auth, metrics labels) and its HTTP
edge's access rules, over real HTTP (aiohttp's test server) without a broker."""

from __future__ import annotations

import html
import re
import socket
import time
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from postlane.configfile import ConfigFileError, parse
from postlane.web import auth, forms, model
from postlane.web.app import COOKIE, Console, make_app
from postlane.web.feed import Feed
from streams import metrics
from streams.settings import Settings


def status(mid: str, state: str, at: float, eid: str, **kw: object) -> bytes:
    return orjson.dumps({"type": "MessageStatusChanged", "message_id": mid, "state": state,
                         "occurred_at": at, "event_id": eid, **kw})


def request(mid: str, to: str, tenant: str = "", at: float = 1.0) -> bytes:
    return orjson.dumps({"message_id": mid, "from_": "a@x.test", "to": [to], "subject": "S",
                         "tenant": tenant, "text": "t", "occurred_at": at})


def test_fold_counts_states_once_per_event_and_keeps_answers() -> None:
    st = model.ConsoleState()
    now = time.time()
    model.fold(st, "send-requested", request("m1", "bob@y.test", "acme", now - 5), now)
    model.fold(st, "status", status("m1", "sending", now - 4, "e1"), now)
    model.fold(st, "status", status("m1", "sending", now - 4, "e1"), now)  # redelivered
    answer = {"bob@y.test": {"state": "failed", "code": 550, "enhanced": "5.1.1",
                             "text": "5.1.1 no such user"}}
    model.fold(st, "status", status("m1", "failed", now - 3, "e2", server="s1",
                                    recipients=answer), now)
    assert st.by_state["failed"] == 1 and st.by_state["sending"] == 0
    assert st.by_state["queued"] == 0
    assert len(st.mails["m1"].history) == 2
    page = model.queue(st, model.QueueFilter())
    assert page["count"] == 1
    assert page["rows"][0]["answers"] == [{"recipient": "bob@y.test", "state": "failed",
                                           "answer": "550 5.1.1 no such user"}]
    assert model.overview(st, now, [])["hour"]["failed"] == 1
    assert {s: len(ids) for s, ids in st.ids_by_state.items() if ids} == {"failed": 1}
    model.fold(st, "status", status("m1", "failed", now - 2, "e3", note="ack applied",
                                    acknowledged=True), now)
    assert model.queue(st, model.QueueFilter())["count"] == 0  # acknowledged: not open
    assert model.queue(st, model.QueueFilter(state="failed"))["count"] == 1


def test_queue_filters_and_pages_newest_first() -> None:
    st = model.ConsoleState()
    now = 10_000.0
    for i in range(250):
        mid = f"m{i:03}"
        model.fold(st, "send-requested", request(mid, f"r{i}@y.test", "t1" if i % 2 else ""),
                   now)
        model.fold(st, "status", status(mid, "sent" if i % 5 else "deferred", now - 1000 + i,
                                        f"e{i}", server="a" if i < 200 else "b"), now)
    assert model.queue(st, model.QueueFilter())["count"] == 50  # open: deferred only
    every = model.queue(st, model.QueueFilter(state="all"))
    assert every["count"] == 250 and every["pages"] == 3
    assert every["rows"][0]["message_id"] == "m249"
    third = model.queue(st, model.QueueFilter(state="all", page=3))
    assert [r["message_id"] for r in third["rows"]][-1] == "m000"
    assert len(third["rows"]) == 50
    assert model.queue(st, model.QueueFilter(state="sent", server="b"))["count"] == 40
    assert {s: len(ids) for s, ids in st.ids_by_state.items()} == {
        "queued": 0, "sent": 200, "deferred": 50}
    assert model.queue(st, model.QueueFilter(state="all", tenant="t1"))["count"] == 125
    assert model.queue(st, model.QueueFilter(state="all", recipient="r17@"))["count"] == 1
    assert model.queue(st, model.QueueFilter(state="all", recipient="r17@y.test"))["count"] == 1
    assert model.queue(st, model.QueueFilter(recipient="r17@y.test"))["count"] == 0  # sent
    assert model.queue(st, model.QueueFilter(recipient="r15@y.test"))["count"] == 1  # deferred
    assert model.queue(st, model.QueueFilter(state="all", since=now - 760))["count"] == 10
    between = model.QueueFilter.from_query({"state": "all", "from": "1970-01-01T02:30",
                                            "to": "1970-01-01T02:31"}, now)
    assert (between.since, between.until) == (9000.0, 9060.0)
    assert model.queue(st, between)["count"] == 61


def test_a_bad_form_is_refused_with_config_apply_sentences_next_to_fields() -> None:
    form = {"name": "local", "host": "127.0.0.1", "port": "99999", "security": "tls",
            "from_filter": "not a domain", "priority": "10", "kind": "any",
            "daily_limit": "0", "active": "on"}
    result = forms.server_from_form(form)
    assert not result.ok
    toml = ('[[servers]]\nname = "local"\nhost = "127.0.0.1"\nport = 99999\n'
            'security = "tls"\nfrom_filter = "not a domain"\n')
    with pytest.raises(ConfigFileError) as refused:
        parse(toml)
    said = str(refused.value)
    for fld in ("port", "security", "from_filter"):
        assert result.errors[fld], fld
        for sentence in result.errors[fld]:
            assert sentence in said, (sentence, said)
    assert forms.server_from_form({**form, "port": "abc", "security": "none",
                                   "from_filter": ""}).errors["port"] == [
        "field 'port' must be int, got str"]
    ok = forms.server_from_form({**form, "port": "2525", "security": "none",
                                 "from_filter": "example.com, boss@other.test"})
    assert ok.ok and ok.event is not None and ok.event.port == 2525


def test_passwords_are_scrypt_hashed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "users"
    assert auth.add_user(path, "ops", "correct horse")
    text = path.read_text()
    assert "correct horse" not in text and text.startswith("ops:scrypt$")
    assert path.stat().st_mode & 0o777 == 0o600
    stored = auth.read_users(path)["ops"]
    assert auth.verify_password("correct horse", stored)
    assert not auth.verify_password("wrong", stored)
    with pytest.raises(auth.UserFileError):
        auth.add_user(path, "bad name", "long enough")
    sessions = auth.Sessions(1)
    once = sessions.one_time(100.0)
    assert sessions.use_once(once, 101.0) and not sessions.use_once(once, 101.0)
    token, _ = sessions.open("ops", 100.0)
    assert sessions.get(token, 200.0) is not None and sessions.get(token, 100.0 + 3601) is None


def test_metric_labels_are_bounded() -> None:
    assert metrics.reply_class(550) == "5xx" and metrics.reply_class(None) == "none"
    assert metrics.reason_of("invalid SendRequested: to: 'x' must contain one @") == \
        "invalid SendRequested"
    assert metrics.reason_of("not JSON: unexpected character") == "unreadable"
    before = metrics.DEAD_LETTERS.labels("router", "invalid SendRequested")._value.get()
    metrics.observe_published("p.dead-letter", orjson.dumps(
        {"type": "EventDeadLettered", "processor": "router",
         "error": "invalid SendRequested: no recipient"}), "p.")
    after = metrics.DEAD_LETTERS.labels("router", "invalid SendRequested")._value.get()
    assert after == before + 1


async def test_nothing_is_shown_without_login_and_forms_need_the_csrf_token(
        tmp_path: Path) -> None:
    s = Settings.from_env(environ={}, data_dir=str(tmp_path))
    console = Console(s, tmp_path / "users")
    auth.add_user(console.users_file, "ops", "correct horse")
    app = make_app(console, Feed(s, console.state))
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/queue", "/servers", "/message/x", "/dead-letters"):
            resp = await client.get(path, allow_redirects=False)
            assert resp.status == 303 and resp.headers["Location"].startswith("/login"), path
        resp = await client.post("/servers/save", data={"name": "x"}, allow_redirects=False)
        assert resp.status == 403
        page = await client.get("/login")
        assert page.status == 200
        pre = page.cookies["postlane_login"].value
        bad = await client.post("/login", data={"csrf": pre, "username": "ops",
                                                "password": "nope"})
        assert bad.status == 401 and "wrong password" in await bad.text()
        page = await client.get("/login")
        pre = page.cookies["postlane_login"].value
        resp = await client.post("/login", data={"csrf": pre, "username": "ops",
                                                 "password": "correct horse"},
                                 allow_redirects=False)
        assert resp.status == 303
        cookie = resp.headers["Set-Cookie"]
        assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        home = await client.get("/")
        assert home.status == 200 and "Overview" in await home.text()
        assert "DENY" == home.headers["X-Frame-Options"]
        refused = await client.post("/servers/remove/x", data={"csrf": "forged"})
        assert refused.status == 403 and "CSRF" in await refused.text()
        form = await client.get("/servers/new")
        assert 'name="csrf"' in await form.text()
        for path in ("/queue", "/queue?state=all&page=3", "/servers", "/incoming", "/aliases",
                     "/settings", "/tenants", "/domains", "/limits", "/suppressions",
                     "/dead-letters"):
            page = await client.get(path)
            assert page.status == 200, (path, await page.text())
            assert 'name="csrf"' in await page.text(), path  # the logout form at least
        assert (await client.get("/message/nope")).status == 404


async def test_the_console_serves_one_click_unsubscribe_without_login(tmp_path: Path) -> None:
    from processors.unsubscribe.token import make_token
    from processors.unsubscribe.web import make_app as unsubscribe_app
    from schemas import UnsubscribeRequested

    s = Settings.from_env(environ={}, data_dir=str(tmp_path))
    console = Console(s, tmp_path / "users")
    recorded: list[UnsubscribeRequested] = []

    async def publish(event: UnsubscribeRequested) -> None:  # the broker's side of the edge
        recorded.append(event)

    secret = b"k" * 32
    app = make_app(console, Feed(s, console.state), unsubscribe_app(secret, publish))
    token = make_token(secret, "acme", "news", "bob@example.org", time.time() + 3600)
    async with TestClient(TestServer(app)) as client:
        page = await client.get(f"/u/{token}")
        assert page.status == 200 and not recorded
        assert (await client.get("/u/forged")).status == 400
        done = await client.post(f"/u/{token}")
        assert done.status == 200
        assert [(e.address, e.tenant, e.list_id) for e in recorded] == [
            ("bob@example.org", "acme", "news")]
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/queue", allow_redirects=False)).status == 303


def test_incoming_servers_show_the_fetchers_last_report() -> None:
    from schemas import IncomingServerChecked, IncomingServerConfigured, encode

    st = model.ConsoleState()
    model.fold(st, "config", encode(IncomingServerConfigured(name="inbox", host="imap.x.test")),
               0.0)
    assert model.incoming(st)[0]["state"] == "not polled yet"
    model.fold(st, "incoming-status", encode(IncomingServerChecked(
        server="inbox", ok=False, sentence="The password was refused.")), 0.0)
    row = model.incoming(st)[0]
    assert (row["state"], row["sentence"]) == ("failing", "The password was refused.")


def test_limits_count_sends_in_the_limiters_window() -> None:
    # windows open at 06:00 in Lisbon (UTC+0 in winter): 2026-01-10 05:59 is the day before
    st = model.ConsoleState(timezone="Europe/Lisbon", day_start="06:00")
    day = 1_768_003_200.0  # 2026-01-10 00:00 UTC
    for i, at in enumerate((day + 5 * 3600 + 3540, day + 6 * 3600 + 60, day + 7 * 3600)):
        model.fold(st, "send-requested", request(f"m{i}", "b@y.test", "acme"), at)
        model.fold(st, "status", status(f"m{i}", "sent", at, f"e{i}", server="s1"), at)
    lim = model.limits(st, day + 8 * 3600)
    assert lim["tenants"] == [{"name": "acme", "limit": 0, "used": 2}]
    assert "2026-01-10 06:00:00 to 2026-01-11 06:00:00 UTC" in lim["window"]
    assert model.limits(st, day + 31 * 3600)["tenants"] == []  # the next window: none yet


def test_settings_and_alias_forms_refuse_as_config_apply() -> None:
    bad = forms.config_from_form("aliases", {"alias": "sales", "target": "crm.lead",
                                             "policy": "nobody"})
    with pytest.raises(ConfigFileError) as refused:
        parse('[[aliases]]\nalias = "sales"\ntarget = "crm.lead"\npolicy = "nobody"\n')
    assert bad.errors["policy"] and bad.errors["policy"][0] in str(refused.value)
    settings = forms.config_from_form("settings", {"catchall_domain": "mycompany.example",
                                                   "loop_minutes": "", "loop_threshold": "5"})
    assert settings.ok
    assert (settings.event.loop_minutes, settings.event.loop_threshold) == (120, 5)
    assert forms.config_from_form("settings", {"loop_minutes": "soon"}).errors["loop_minutes"]


def test_tenant_and_domain_forms() -> None:
    assert forms.config_from_form("tenants", {"name": "acme", "daily_limit": "500"}).ok
    refused = forms.config_from_form("domains", {"domain": "gmail.com", "rate": "fast"})
    with pytest.raises(ConfigFileError) as said:
        parse('[[domains]]\ndomain = "gmail.com"\nrate = "fast"\n')
    assert refused.errors["rate"][0] in str(said.value)


def test_a_login_goes_back_to_local_pages_only() -> None:
    from postlane.web.app import _safe_next

    assert _safe_next("/queue?state=failed") == "/queue?state=failed"
    for bad in ("//evil.example/", "/\\evil.example", "https://evil.example/", "/x\r\nSet-Cookie:"):
        assert _safe_next(bad) == "/", bad


def test_the_unfiltered_queue_follows_the_latest_changes(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(model, "TIMELINE_SLACK", 10)
    st = model.ConsoleState()
    for n in range(60):  # three mails changing in turn: m2, m0, m1, m2, ...
        mid = f"m{(n + 2) % 3}"
        model.fold(st, "status", status(mid, "deferred", 100.0 + n, f"e{n}"), 200.0)
    assert len(st.timeline) <= 4 * 3 + 10
    rows = model.queue(st, model.QueueFilter(state="all"))["rows"]
    assert [r["message_id"] for r in rows] == ["m1", "m0", "m2"]
    assert model.queue(st, model.QueueFilter(state="all", page=2))["rows"] == []


def test_incoming_and_dkim_forms_refuse_as_config_apply() -> None:
    form = {"name": "in1", "host": "imap.x.test", "port": "70000", "security": "tls",
            "folder": "INBOX", "active": "on", "use_idle": "on"}
    bad = forms.config_from_form("incoming", form)
    with pytest.raises(ConfigFileError) as refused:
        parse('[[incoming]]\nname = "in1"\nhost = "imap.x.test"\nport = 70000\n'
              'security = "tls"\n')
    for fld in ("port", "security"):
        assert bad.errors[fld], (fld, bad)
        for sentence in bad.errors[fld]:
            assert sentence in str(refused.value), (sentence, str(refused.value))
    both = forms.config_from_form("incoming", {**form, "port": "993", "security": "ssl",
                                               "password_env": "P", "password_file": "/p"})
    assert both.errors["password_env"] == ["give password_env or password_file, not both"]
    ok = forms.config_from_form("incoming", {**form, "port": "143", "security": "starttls",
                                             "poll_interval": "30"})
    assert ok.ok and (ok.event.port, ok.event.poll_interval, ok.event.use_idle) == (143, 30.0,
                                                                                    True)
    assert forms.initial("incoming")["port"] == 993  # a new server: the event's defaults
    assert forms.initial("incoming", ok.event)["poll_interval"] == 30.0

    none = forms.config_from_form("dkim", {"domain": "example.com", "selector": "s1",
                                           "algorithm": "rsa-sha256"})
    with pytest.raises(ConfigFileError) as said:
        parse('[[dkim]]\ndomain = "example.com"\nselector = "s1"\n')
    assert none.errors["key_file"][0] in str(said.value)
    pasted = forms.config_from_form("dkim", {"domain": "example.com", "selector": "s1",
                                             "key_env": "-----BEGIN PRIVATE KEY-----MIIE"})
    assert not pasted.ok and "never entered" in pasted.errors["key_env"][0]
    good = forms.config_from_form("dkim", {"domain": "example.com", "selector": "s1",
                                           "key_env": "DKIM_KEY", "algorithm": "ed25519-sha256"})
    assert good.ok and good.event.key == "dkim:example.com"


async def _logged_in(client: TestClient) -> str:
    page = await client.get("/login")
    pre = page.cookies["postlane_login"].value
    await client.post("/login", data={"csrf": pre, "username": "ops",
                                      "password": "correct horse"})
    text = await (await client.get("/")).text()
    m = re.search(r'name="csrf" value="([^"]+)"', text)
    assert m is not None
    return m.group(1)


async def test_incoming_and_dkim_pages_refuse_next_to_fields_and_test_unsaved_values(
        tmp_path: Path) -> None:
    s = Settings.from_env(environ={}, data_dir=str(tmp_path))
    console = Console(s, tmp_path / "users")
    auth.add_user(console.users_file, "ops", "correct horse")
    async with TestClient(TestServer(make_app(console, Feed(s, console.state)))) as client:
        csrf = await _logged_in(client)
        page = await client.post("/incoming/save", data={
            "csrf": csrf, "name": "in1", "host": "127.0.0.1", "port": "0", "security": "none",
            "folder": "INBOX", "action": "save"})
        text = await page.text()
        assert page.status == 422 and 'id="err-port"' in text
        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        tested = await client.post("/incoming/save", data={
            "csrf": csrf, "name": "in1", "host": "127.0.0.1", "port": str(port),
            "security": "none", "folder": "INBOX", "action": "test"})
        text = html.unescape(await tested.text())
        assert tested.status == 200
        assert f"in1: Nothing is listening on 127.0.0.1 port {port}" in text
        assert not console.state.config.incoming  # tested, not saved
        dkim = await client.post("/dkim/save", data={
            "csrf": csrf, "domain": "example.com", "selector": "s1",
            "key_file": "-----BEGIN PRIVATE KEY-----MIIEsecret", "algorithm": "rsa-sha256"})
        text = await dkim.text()
        assert dkim.status == 422 and 'id="err-key_file"' in text
        assert "MIIEsecret" not in text  # a key pasted by mistake is not shown back
        unset = await client.post("/dkim/save", data={
            "csrf": csrf, "domain": "example.com", "selector": "s1",
            "key_env": "POSTLANE_TEST_NO_SUCH_VARIABLE", "algorithm": "rsa-sha256"})
        text = await unset.text()  # config apply's check of the key, next to the reference
        assert unset.status == 422 and 'id="err-key_env"' in text
        assert "POSTLANE_TEST_NO_SUCH_VARIABLE" in text
        for path in ("/dkim", "/incoming?edit=nope", "/dkim?edit=nope"):
            assert (await client.get(path)).status == 200, path


def test_failed_logins_wait_longer_and_longer_per_name_and_per_address() -> None:
    t = auth.LoginThrottle(free=5, base=2.0, most=900.0, forget=900.0)
    bob = ["user:bob", "addr:10.0.0.1"]
    for i in range(4):
        assert t.failed(bob, 100.0 + i) == 0.0  # four failures: no wait yet
    assert t.failed(bob, 104.0) == 2.0  # the fifth: 2 s
    assert t.wait(bob, 105.0) == 1.0 and t.wait(bob, 106.0) <= 0
    assert t.failed(bob, 106.0) == 4.0 and t.failed(bob, 110.0) == 8.0  # doubling
    # the same name from elsewhere waits too, and another name from that address
    assert t.wait(["user:bob", "addr:10.0.0.2"], 111.0) == 7.0
    assert t.wait(["user:eve", "addr:10.0.0.1"], 111.0) == 7.0
    assert t.wait(["user:eve", "addr:10.0.0.2"], 111.0) == 0.0
    for i in range(20):
        t.failed(bob, 200.0 + i)
    assert t.wait(bob, 220.0) == 900.0 - 1  # at most 15 minutes
    t.succeeded("user:bob")  # a login that worked ends the name's count, not the address's
    assert t.wait(["user:bob", "addr:10.0.0.2"], 300.0) == 0.0
    assert t.wait(bob, 300.0) > 0
    assert t.failed(["addr:10.0.0.1"], 219.0 + 900 + 900) == 0.0  # forgotten: counts anew
    assert auth.retry_after(0.2) == "1" and auth.retry_after(7.5) == "8"


async def test_logins_are_refused_with_429_after_five_failures_over_http(
        tmp_path: Path) -> None:
    s = Settings.from_env(environ={}, data_dir=str(tmp_path))
    console = Console(s, tmp_path / "users", throttle=auth.LoginThrottle(base=60.0))
    auth.add_user(console.users_file, "ops", "correct horse")
    async with TestClient(TestServer(make_app(console, Feed(s, console.state)))) as client:

        async def attempt(name: str, password: str) -> tuple[int, str, str]:
            page = await client.get("/login")
            pre = page.cookies["postlane_login"].value
            resp = await client.post("/login", allow_redirects=False, data={
                "csrf": pre, "username": name, "password": password})
            return resp.status, resp.headers.get("Retry-After", ""), await resp.text()

        for _ in range(5):
            assert (await attempt("ops", "guess"))[:2] == (401, "")
        status_, retry, text = await attempt("ops", "correct horse")  # right, but too late
        assert (status_, retry) == (429, "60") and "try again in 60 s" in text
        assert (await attempt("admin", "guess"))[0] == 429  # the address waits too
        assert (await client.get("/", allow_redirects=False)).status == 303  # no session
        console.throttle = auth.LoginThrottle()
        assert (await attempt("ops", "correct horse"))[0] == 303

"""The console in a real browser (Debian's chromium driven by Playwright)
against ``postlane dev`` and a real SMTP server: log in, refuse a bad
server form in config apply's words (publishing nothing), add the server
with the form, Test connection, watch a mail reach ``sent``, see a failed
one with the server's answer, retry it, log out."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postlane.configfile import ConfigFileError, parse
from postlane.configops import current_view
from postlane.publisher import Publisher
from schemas import SuppressionEdited
from streams.client import publish
from streams.topics import BOUNCES

from .stack import CHROMIUM, PASSWORD, USER, ConsoleStack, launch

pytestmark = pytest.mark.e2e

if not Path(CHROMIUM).exists():  # scripts/test installs it (scripts/system-deps)
    raise RuntimeError(f"{CHROMIUM} is missing: run scripts/system-deps (Debian's chromium)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with ConsoleStack(tmp_path_factory.mktemp("console")) as s:
        yield s


@pytest.fixture(scope="module")
def page(stack: ConsoleStack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def reload_until(page: Any, url: str, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        page.goto(url)
        body = page.inner_text("main")
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not on {url} after {timeout} s; page:\n{body[-2000:]}")


def test_the_console_end_to_end(stack: ConsoleStack, page: Any) -> None:
    base = stack.url
    # nothing without logging in
    page.goto(base + "/queue")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong password" in page.inner_text("main")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == base + "/queue"
    cookie = next(c for c in page.context.cookies() if c["name"] == "postlane_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # a bad form: refused next to each field, in config apply's words; nothing published
    page.goto(base + "/servers/new")
    page.fill("#f-name", "local")
    page.fill("#f-host", "127.0.0.1")
    page.fill("#f-port", "99999")
    page.evaluate("""() => { const s = document.querySelector('#f-security');
                             s.add(new Option('tls', 'tls')); s.value = 'tls'; }""")
    page.fill("#f-from_filter", "not a domain")
    page.click("button[value=save]")
    said = {f: page.inner_text(f"#err-{f}") for f in ("port", "security", "from_filter")}
    with pytest.raises(ConfigFileError) as refused:
        parse('[[servers]]\nname = "local"\nhost = "127.0.0.1"\nport = 99999\n'
              'security = "tls"\nfrom_filter = "not a domain"\n')
    for sentence in said.values():
        assert sentence and sentence in str(refused.value), (sentence, str(refused.value))
    assert "outside 1-65535" in said["port"]
    assert "local" not in current_view(stack.settings).servers

    # the good form: Test connection against the real SMTP server, then save
    page.fill("#f-port", str(stack.smtp_port))
    page.select_option("#f-security", "none")
    page.fill("#f-from_filter", "")
    page.click("button[value=test]")
    report = page.inner_text(".report")
    assert f"The server local (127.0.0.1 port {stack.smtp_port}) works" in report, report
    assert "local" not in current_view(stack.settings).servers  # a test publishes nothing
    page.click("button[value=save]")
    assert page.url == base + "/servers"
    assert "published OutgoingServerConfigured server:local" in page.inner_text("main")
    assert current_view(stack.settings).servers["local"].port == stack.smtp_port

    # an alias: refused in config apply's words, then added
    page.goto(base + "/aliases")
    page.fill("#f-alias", "sales")
    page.fill("#f-target", "crm.lead")
    page.fill("#f-policy", "nobody")
    page.click("text=Save alias")
    assert page.inner_text("#err-policy") == \
        "policy 'nobody' must be one of everyone, contacts, followers"
    assert "sales" not in current_view(stack.settings).aliases
    page.fill("#f-policy", "contacts")
    page.click("text=Save alias")
    assert page.url == base + "/aliases"
    assert current_view(stack.settings).aliases["sales"].policy == "contacts"

    # a mail reaches sent; a rejected one fails with the server's answer
    with Publisher(settings=stack.settings) as pub:
        ok = pub.send(from_="app@example.com", to=["ok@example.org"], subject="Browser OK",
                      text="hello")
        bad = pub.send(from_="app@example.com", to=["reject@example.org"],
                       subject="Browser reject", text="hello")
    reload_until(page, base + "/queue?state=sent", "Browser OK")
    body = reload_until(page, base + "/queue?state=failed", "Browser reject")
    assert "550" in body and "User unknown" in body
    page.goto(base + f"/message/{ok}")
    facts = page.inner_text("dl.facts")
    assert "local" in facts and "unfiltered_server" in facts  # the routing rule
    assert "250" in page.inner_text("main")

    # retry the failed one from the queue: the command is answered, a new attempt follows
    page.goto(base + "/queue?state=failed")
    page.check(f'input[name=id][value="{bad}"]')
    page.click("#bulk button[value=retry]")
    assert re.search(rf"{bad}: retry applied", page.inner_text("main")), page.inner_text("main")
    reload_until(page, base + f"/message/{bad}", "attempt 2")

    # metrics of the same process
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics") as resp:
        text = resp.read().decode()
    assert 'postlane_smtp_outcomes_total{outcome="failed",reply_class="5xx",server="local"}' \
        in text
    assert re.search(r'postlane_mails\{state="sent"\} [1-9]', text)

    # a suppression added by the CLI's event is listed with why, and removed here
    edit = SuppressionEdited(address="former@example.org", action="add",
                             reason="asked by phone", by="ops")
    publish(stack.settings, BOUNCES, [(edit.address, edit)])
    body = reload_until(page, base + "/suppressions", "former@example.org")
    assert "asked by phone" in body
    page.click("text=Remove")
    assert "removal of the manual suppression published" in page.inner_text("main")
    deadline = time.monotonic() + 30
    while "former@example.org" in page.inner_text("main") and time.monotonic() < deadline:
        time.sleep(0.5)
        page.goto(base + "/suppressions")
    assert "nobody is suppressed" in page.inner_text("main")

    # log out: the pages are closed again
    page.click("header form.logout button")
    assert page.url.startswith(base + "/login")
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")

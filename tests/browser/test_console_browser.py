"""The console in a real browser (Debian's chromium driven by Playwright)
against ``postlane dev``, a real SMTP server and a real IMAP server
(Dovecot): log in, refuse a bad server form in config apply's words
(publishing nothing), add the server with the form, Test connection and a
test send, add an incoming server (refused, then Test connection with a
wrong and a right password, saved, removed), a DKIM key by reference,
watch a mail reach ``sent``, see a failed one with the server's answer,
retry it, log out."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from postlane.configfile import ConfigFileError, parse
from postlane.configops import current_view
from postlane.publisher import Publisher
from processors.fetcher.probe import test_incoming as probe_incoming
from schemas import SuppressionEdited
from streams.client import publish
from streams.topics import BOUNCES
from tests.imap.dovecot import Dovecot

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


def current_form_server(page: Any) -> Any:
    """The incoming server the page's form describes (as the console builds it)."""
    from postlane.web import forms

    values = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        'form.server input, form.server select')].filter(e => e.name && e.name !== 'csrf')
        .map(e => [e.name, e.type === 'checkbox' ? (e.checked ? 'on' : '') : e.value]))""")
    result = forms.config_from_form("incoming", values)
    assert result.ok, result
    return result.event


def test_the_console_end_to_end(stack: ConsoleStack, page: Any, dovecot: Dovecot,
                                tmp_path: Path) -> None:
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

    # a test send from the saved server's form (postlane servers test --send-to)
    page.goto(base + "/servers/edit/local")
    page.fill("#f-send_to", "probe@example.org")
    page.click("button[value=test]")
    assert "There is no sender address for the test mail" in page.inner_text(".report")
    page.fill("#f-on_behalf", "app@example.com")
    page.click("button[value=test]")
    report = page.inner_text(".report")
    assert "works: " in report and "test mail to probe@example.org accepted" in report, report
    assert any("probe@example.org" in e.rcpt_tos for e in stack.handler.received)

    # an incoming server: refused as config apply refuses, tested against Dovecot, saved
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.write_text("not-the-password\n")
    right.write_text("s3cret-imap\n")
    page.goto(base + "/incoming")
    page.fill("#f-name", "inbox")
    page.fill("#f-host", "127.0.0.1")
    page.fill("#f-port", str(dovecot.port))
    page.select_option("#f-security", "none")
    page.fill("#f-username", "gateway")
    page.fill("#f-password_file", str(wrong))
    page.fill("#f-poll_interval", "soon")
    page.uncheck("#f-active")  # not polled: other tests read this Dovecot's mailboxes
    page.click("button[value=save]")
    with pytest.raises(ConfigFileError) as refused:
        parse('[[incoming]]\nname = "inbox"\nhost = "127.0.0.1"\npoll_interval = "soon"\n')
    assert page.inner_text("#err-poll_interval") in str(refused.value)
    assert "inbox" not in current_view(stack.settings).incoming
    page.fill("#f-poll_interval", "30")
    page.click("button[value=test]")
    said = page.inner_text(".report b")
    tried = current_form_server(page)
    with ThreadPoolExecutor(1) as other:  # Playwright's loop runs on this thread
        cli = other.submit(lambda: asyncio.run(probe_incoming(tried, timeout=10.0))).result()
    assert not cli.ok and said == f"inbox: {cli.sentence}", (said, cli.sentence)
    assert "refused the login of 'gateway'" in said
    page.fill("#f-password_file", str(right))
    page.click("button[value=test]")
    said = page.inner_text(".report b")
    assert said.startswith(f"inbox: The incoming server inbox (127.0.0.1 port {dovecot.port}) "
                           "works: no encryption, login as 'gateway' accepted"), said
    assert "inbox" not in current_view(stack.settings).incoming  # a test publishes nothing
    page.click("button[value=save]")
    assert page.url == base + "/incoming"
    assert "published IncomingServerConfigured incoming:inbox" in page.inner_text("main")
    saved = current_view(stack.settings).incoming["inbox"]
    assert (saved.port, saved.password_file, saved.active) == (dovecot.port, str(right), False)
    page.click("tr:has-text('inbox') button:has-text('Test connection')")
    assert "works" in page.inner_text(".report b")
    page.click("tr:has-text('inbox') button:has-text('Remove')")
    assert "published IncomingServerRemoved incoming:inbox" in page.inner_text("main")
    assert "inbox" not in current_view(stack.settings).incoming

    # a DKIM key by reference only: a pasted key is refused and not shown back
    page.goto(base + "/dkim")
    page.fill("#f-domain", "example.com")
    page.fill("#f-selector", "pl1")
    page.fill("#f-key_env", "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBg")
    page.click("text=Save DKIM key")
    assert "never entered here" in page.inner_text("#err-key_env")
    assert "MIIEvQIBADANBg" not in page.content()
    page.fill("#f-key_env", "DKIM_EXAMPLE_KEY")  # not in postlane dev's environment
    page.click("text=Save DKIM key")
    assert "DKIM_EXAMPLE_KEY" in page.inner_text("#err-key_env")  # config apply's key check
    assert "example.com" not in current_view(stack.settings).dkim
    key = tmp_path / "dkim-example.key"
    subprocess.run([sys.executable, "-m", "postlane", "dkim", "keygen", "--domain",
                    "example.com", "--selector", "pl1", "--algorithm", "ed25519-sha256",
                    "--out", str(key)], check=True, capture_output=True)
    page.fill("#f-key_env", "")
    page.fill("#f-key_file", str(key))
    page.select_option("#f-algorithm", "ed25519-sha256")
    page.click("text=Save DKIM key")
    assert page.url == base + "/dkim", page.inner_text("main")
    assert current_view(stack.settings).dkim["example.com"].key_file == str(key)
    assert key.read_text().strip() not in page.content()  # the key itself is never shown

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

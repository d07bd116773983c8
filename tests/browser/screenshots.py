"""Screenshots of every console page in docs/console/ (``scripts/console-screenshots``):
``postlane dev`` with a sample configuration, a few mails (sent, failed,
deferred), a dead letter and a suppression, photographed in Debian's
chromium."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaProducer

from postlane.publisher import Publisher
from schemas import SuppressionEdited
from streams.client import publish
from streams.topics import BOUNCES, SEND_REQUESTED

from .stack import PASSWORD, USER, ConsoleStack, launch

CONFIG = """
[settings]
default_from = "notifications"
catchall_domain = "mycompany.example"

[[servers]]
name = "primary"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from_filter = "mycompany.example"
priority = 10
daily_limit = 2000
rate = "10/s"

[[servers]]
name = "campaigns"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
kind = "mass"
priority = 20
tenant = "acme"

[[incoming]]
name = "support-inbox"
host = "127.0.0.1"
port = 1
security = "ssl"
username = "support@mycompany.example"
password_env = "SUPPORT_IMAP_PASSWORD"

[[dkim]]
domain = "mycompany.example"
selector = "pl2026"
key_file = "{dkim_key}"

[[aliases]]
alias = "sales"
target = "crm.lead"

[[tenants]]
name = "acme"
daily_limit = 500

[[domains]]
domain = "gmail.com"
rate = "60/min"
"""

PAGES = [
    ("02-overview", "/"), ("03-queue", "/queue?state=all"),
    ("04-queue-failed", "/queue?state=failed"),
    ("06-servers", "/servers"), ("07-server-form", "/servers/edit/primary"),
    ("10-incoming", "/incoming"), ("11-aliases", "/aliases"), ("12-settings", "/settings"),
    ("13-limits", "/limits"), ("13-tenants", "/tenants"), ("14-suppressions", "/suppressions"),
    ("15-dead-letters", "/dead-letters"), ("16-dkim", "/dkim"),
]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "dkim-mycompany.pem"  # config apply reads the key before publishing
        subprocess.run([sys.executable, "-m", "postlane", "dkim", "keygen", "--domain",
                        "mycompany.example", "--selector", "pl2026", "--out", str(key)],
                       check=True, capture_output=True)
        shoot(out, ConsoleStack(Path(tmp), CONFIG.replace("{dkim_key}", str(key))))
    print(f"screenshots in {out}: {', '.join(sorted(p.name for p in out.glob('*.png')))}")


def shoot(out: Path, console: ConsoleStack) -> None:
    with console as stack:
        s = stack.settings
        with Publisher(settings=s) as pub:
            mids = [pub.send(from_="billing@mycompany.example", to=[f"client{i}@example.org"],
                             subject=f"Invoice 2026-{i:04}", text="Your invoice", tenant="acme")
                    for i in range(1, 6)]
            failed = pub.send(from_="billing@mycompany.example", to=["reject@example.org"],
                              subject="Invoice 2026-0099", text="Your invoice")
            pub.send(from_="hr@mycompany.example", to=["defer@example.net"],
                     subject="Your payslip", text="Attached")
        producer = KafkaProducer(bootstrap_servers=s.bootstrap)
        producer.send(SEND_REQUESTED.full(s), key=b"broken-1",
                      value=b'{"message_id": "broken-1", "to": "not a list"}').get(10)
        producer.close()
        edit = SuppressionEdited(address="former.client@example.org", action="add",
                                 reason="asked by phone", by="ops")
        publish(s, BOUNCES, [(edit.address, edit)])
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(stack.url + "/login")
            page.screenshot(path=str(out / "01-login.png"))
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # every mail where it goes
                page.goto(stack.url + "/queue?state=all")
                body = page.inner_text("main")
                if "Invoice 2026-0099" in body and "failed" in body and "deferred" in body \
                        and body.count("sent") >= 5:
                    break
                time.sleep(1)
            time.sleep(11)  # the processors' consumer groups are read every 10 s
            for name, path in PAGES:
                page.goto(stack.url + path)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            page.goto(stack.url + f"/message/{failed}")
            page.screenshot(path=str(out / "05-message-failed.png"), full_page=True)
            page.goto(stack.url + f"/message/{mids[0]}")
            page.screenshot(path=str(out / "05-message-sent.png"), full_page=True)
            page.goto(stack.url + "/servers/new")
            page.fill("#f-name", "backup")
            page.fill("#f-host", "smtp.example.com")
            page.fill("#f-port", "99999")
            page.fill("#f-from_filter", "not a domain")
            page.click("button[value=save]")
            page.screenshot(path=str(out / "08-server-form-refused.png"), full_page=True)
            page.goto(stack.url + "/servers/edit/primary")
            page.click("button[value=test]")
            page.screenshot(path=str(out / "09-server-test-connection.png"), full_page=True)
            page.fill("#f-send_to", "postmaster@example.org")
            page.fill("#f-on_behalf", "billing@mycompany.example")
            page.click("button[value=test]")
            page.screenshot(path=str(out / "09-server-test-send.png"), full_page=True)
            page.goto(stack.url + "/incoming")
            page.click("text=Test connection")
            page.screenshot(path=str(out / "10-incoming-test.png"), full_page=True)
            page.goto(stack.url + "/incoming?edit=support-inbox")
            page.fill("#f-port", "99999")
            page.fill("#f-folder", "")
            page.click("button[value=save]")
            page.screenshot(path=str(out / "10-incoming-form-refused.png"), full_page=True)
            browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/console"))

"""DKIM signing and one-click unsubscribe, pure parts: signatures verified by
dkimpy against the published key (DNS stubbed through dnsfunc), keys and
their errors, the [[dkim]] table, tokens, the headers mass mail gets, the
endpoint's answers and the mailto route."""

from __future__ import annotations

import base64
import email
import os
from email import policy
from pathlib import Path

import dkim as dkimpy
import pytest
from click.testing import CliRunner

from postlane.cli.dkim_cmd import dkim as dkim_group
from postlane.configfile import ConfigFileError, events, parse
from postlane.configops import dkim_key_problems
from processors.config.view import fold
from processors.delivery.dkim import DkimError, LoadedKey, Signer, choose, load_key, sign
from processors.delivery.message import (
    build_message,
    feedback_id,
    make_smtp_message_id,
    message_bytes,
)
from processors.inbound import core as inbound
from processors.inbound.mail import parse_mail
from processors.unsubscribe.core import answer
from processors.unsubscribe.token import (
    TokenError,
    list_unsubscribe_headers,
    make_token,
    read_token,
)
from schemas import (
    DkimKeyConfigured,
    OutgoingServerConfigured,
    RoutingDecided,
    SendRequested,
    SettingsChanged,
)
from streams.secrets import SecretUnavailable, read_dkim_key, unsubscribe_secret

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_780_000_000.0
SERVER = OutgoingServerConfigured(name="primary", host="smtp.example.com")


def keygen(tmp_path: Path, algorithm: str, domain: str = "shop.example",
           selector: str = "pl2026") -> tuple[DkimKeyConfigured, str]:
    """A key made by `postlane dkim keygen`; (entry, the TXT value printed)."""
    out = tmp_path / f"{selector}.key"
    result = CliRunner().invoke(dkim_group, ["keygen", "--domain", domain, "--selector",
                                             selector, "--algorithm", algorithm,
                                             "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert os.stat(out).st_mode & 0o077 == 0  # not readable by others
    txt = next(line for line in result.output.splitlines() if line.startswith("v=DKIM1"))
    return DkimKeyConfigured(domain=domain, selector=selector, key_file=str(out),
                             algorithm=algorithm), txt


def dns(records: dict[str, str]):
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value else None
    return lookup


def request(**changes) -> SendRequested:
    fields = dict(message_id="m-1", from_='"Shop" <news@shop.example>',
                  to=["Bob <Bob@Example.org>"], subject="Spring offers", text="Hello Bob\n" * 40,
                  html="<p>Hello</p>", kind="mass", tenant="acme", list_id="newsletter",
                  campaign="spring-2026", occurred_at=NOW)
    fields.update(changes)
    return SendRequested(**fields)


def decision(header_from: str = '"Shop" <news@shop.example>') -> RoutingDecided:
    return RoutingDecided(message_id="m-1", outcome="routed", server="primary",
                          header_from=header_from, envelope_from="bounce+m-1@mycompany.com")


def wire(req: SendRequested, key: LoadedKey | None, header_from: str | None = None) -> bytes:
    d = decision(header_from) if header_from else decision()
    headers = list_unsubscribe_headers(req, SECRET, base_url="https://u.shop.example",
                                       mailto_domain="mycompany.com", alias="unsubscribe",
                                       now=NOW, valid_days=90)
    msg = build_message(req, d, SERVER, make_smtp_message_id(req.message_id, "shop.example"),
                        list_headers=headers)
    data = message_bytes(msg)
    return data if key is None else sign(data, key, msg.keys())


# --- DKIM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_signed_mail_verifies_against_the_published_key(tmp_path, algorithm):
    entry, txt = keygen(tmp_path, algorithm)
    key = load_key(entry, read_dkim_key(entry))
    assert key.public_txt == txt
    data = wire(request(), key)
    lookup = dns({"pl2026._domainkey.shop.example": txt})
    assert dkimpy.verify(data, dnsfunc=lookup)
    sig = email.message_from_bytes(data, policy=policy.default)["DKIM-Signature"]
    tags = {k.strip(): v.strip() for k, _, v in
            (p.partition("=") for p in str(sig).replace("\r\n", "").split(";"))}
    assert tags["a"] == algorithm and tags["d"] == "shop.example" and tags["s"] == "pl2026"
    signed = {h.strip() for h in tags["h"].split(":")}
    assert {"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
            "list-unsubscribe", "list-unsubscribe-post", "feedback-id"} <= signed
    # a tampered body fails; so does a changed signed header
    tampered = data.replace(b"Hello Bob", b"Hello Eve", 1)
    assert tampered != data and not dkimpy.verify(tampered, dnsfunc=lookup)
    forged_subject = data.replace(b"Subject: Spring offers", b"Subject: Spring offerz", 1)
    assert not dkimpy.verify(forged_subject, dnsfunc=lookup)
    # another key published under the selector: fails
    _, other = keygen(tmp_path / "o" if (tmp_path / "o").mkdir() is None else tmp_path,
                      algorithm, selector="other")
    assert not dkimpy.verify(data, dnsfunc=dns({"pl2026._domainkey.shop.example": other}))


def test_the_signature_covers_the_rewritten_from(tmp_path):
    entry, txt = keygen(tmp_path, "rsa-sha256", domain="mycompany.com")
    key = load_key(entry, read_dkim_key(entry))
    data = wire(request(), key, header_from='"Shop" <notifications@mycompany.com>')
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert parsed["From"] == "Shop <notifications@mycompany.com>"
    assert dkimpy.verify(data, dnsfunc=dns({"pl2026._domainkey.mycompany.com": txt}))


def test_choose_takes_the_domain_or_its_nearest_parent():
    a = DkimKeyConfigured(domain="shop.example", selector="s", key_file="/k")
    b = DkimKeyConfigured(domain="News.Shop.Example", selector="s", key_file="/k2")
    entries = {"shop.example": a, "news.shop.example": b}
    assert choose(entries, "shop.example") is a
    assert choose(entries, "SHOP.example") is a
    assert choose(entries, "mail.shop.example") is a
    assert choose(entries, "x.news.shop.example") is b
    assert choose(entries, "example") is None
    assert choose(entries, "othershop.example") is None
    assert choose({}, "shop.example") is None


def test_key_problems_are_sentences_without_the_key(tmp_path):
    missing = DkimKeyConfigured(domain="shop.example", selector="s", key_file=str(tmp_path / "no"))
    with pytest.raises(SecretUnavailable, match="does not exist: create it with `postlane dkim"):
        read_dkim_key(missing)
    unset = DkimKeyConfigured(domain="shop.example", selector="s", key_env="DKIM_SHOP")
    with pytest.raises(SecretUnavailable, match="DKIM_SHOP which is not set"):
        read_dkim_key(unset, environ={})
    entry, _ = keygen(tmp_path, "ed25519-sha256")
    seed = read_dkim_key(entry)
    as_rsa = DkimKeyConfigured(domain="shop.example", selector="s", key_env="K")
    with pytest.raises(DkimError, match="not a PEM private key") as err:
        load_key(as_rsa, seed)
    assert seed.decode() not in str(err.value)
    garbage = DkimKeyConfigured(domain="shop.example", selector="s", key_env="K",
                                algorithm="ed25519-sha256")
    with pytest.raises(DkimError, match="not an ed25519 private key"):
        load_key(garbage, b"not a key")
    assert load_key(garbage, read_dkim_key(garbage, environ={"K": seed.decode()})).domain


def test_signer_reads_a_key_again_after_a_failure(tmp_path):
    entry, _ = keygen(tmp_path, "rsa-sha256")
    pem = Path(entry.key_file).read_bytes()
    Path(entry.key_file).unlink()
    signer = Signer(read_dkim_key)
    entries = {"shop.example": entry}
    with pytest.raises(SecretUnavailable):
        signer.key_for(entries, "shop.example")
    Path(entry.key_file).write_bytes(pem)
    assert signer.key_for(entries, "shop.example") is not None
    assert signer.key_for(entries, "unsigned.example") is None


def test_dkim_table_in_the_config_file_and_the_check_at_apply(tmp_path):
    entry, _ = keygen(tmp_path, "rsa-sha256")
    text = f'''
[[dkim]]
domain = "shop.example"
selector = "pl2026"
key_file = "{entry.key_file}"
algorithm = "rsa-sha256"

[[dkim]]
domain = "other.example"
selector = "s1"
key_file = "{tmp_path / 'missing.pem'}"
'''
    desired = parse(text)
    assert [d.domain for d in desired.dkim] == ["shop.example", "other.example"]
    view = fold(events(desired))
    assert set(view.dkim) == {"shop.example", "other.example"}
    problems = dkim_key_problems([(e.key, e) for e in desired.dkim])
    assert len(problems) == 1 and "missing.pem does not exist" in problems[0]
    with pytest.raises(ConfigFileError, match="the private key itself is refused"):
        parse('[[dkim]]\ndomain = "a.example"\nselector = "s"\nkey = "-----BEGIN"\n')
    with pytest.raises(ConfigFileError, match="exactly one"):
        parse('[[dkim]]\ndomain = "a.example"\nselector = "s"\n')
    with pytest.raises(ConfigFileError, match="algorithm"):
        parse('[[dkim]]\ndomain = "a.example"\nselector = "s"\nkey_env = "K"\n'
              'algorithm = "rsa-sha1"\n')


# --- tokens and headers ------------------------------------------------------------------------


def test_token_round_trip_and_refusals():
    token = make_token(SECRET, "acme", "newsletter", "Bob@Example.org", NOW + 60)
    assert token == token.lower() and token.isalnum()
    claims = read_token(SECRET, token, NOW)
    assert (claims.tenant, claims.list_id, claims.address) == ("acme", "newsletter",
                                                                "bob@example.org")
    assert read_token(SECRET, token.upper(), NOW) == claims  # case does not matter (mailto)
    with pytest.raises(TokenError) as err:
        read_token(SECRET, token, NOW + 61)
    assert err.value.reason == "expired"
    with pytest.raises(TokenError) as err:
        read_token(b"another secret, another sender!", token, NOW)
    assert err.value.reason == "forged"
    # an attacker changing the address inside the token
    raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    altered = raw.replace(b"bob@", b"eve@")
    forged = base64.b32encode(altered).decode().rstrip("=").lower()
    with pytest.raises(TokenError) as err:
        read_token(SECRET, forged, NOW)
    assert err.value.reason == "forged"
    for junk in ("", "!!!", "a" * 2000, "abc"):
        with pytest.raises(TokenError):
            read_token(SECRET, junk, NOW)


def test_mass_mail_gets_one_click_headers_and_feedback_id():
    data = wire(request(), None)
    parsed = email.message_from_bytes(data, policy=policy.default)
    links = [x.strip().strip("<>") for x in str(parsed["List-Unsubscribe"]).split(",")]
    assert links[0].startswith("https://u.shop.example/u/")
    token = links[0].rsplit("/", 1)[1]
    assert links[1] == f"mailto:unsubscribe@mycompany.com?subject=unsubscribe%20{token}"
    claims = read_token(SECRET, token, NOW)
    assert (claims.tenant, claims.list_id, claims.address) == ("acme", "newsletter",
                                                                "bob@example.org")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Feedback-ID"] == "spring-2026:acme:mass:primary"
    assert parsed["Message-ID"] == "<m-1@shop.example>"
    assert b"=?utf-8?" not in data.split(b"\r\n\r\n", 1)[0]  # no encoded words in the links
    assert all(len(line) < 998 for line in data.split(b"\r\n"))
    transactional = email.message_from_bytes(
        wire(request(kind="transactional", campaign=""), None), policy=policy.default)
    assert transactional["List-Unsubscribe"] is None
    assert transactional["Feedback-ID"] == ":acme:transactional:primary"


def test_feedback_id_parts_have_no_colons():
    assert feedback_id(request(campaign="a:b c", tenant="t:1"), SERVER) == "a-b-c:t-1:mass:primary"


# --- the endpoint's answers and the mailto route -------------------------------------------------


def test_endpoint_answers():
    token = make_token(SECRET, "acme", "newsletter", "bob@example.org", NOW + 60)
    get = answer("GET", token, SECRET, NOW)
    assert get.status == 200 and get.event is None and "<form method=\"post\"" in get.page()
    post = answer("POST", token, SECRET, NOW)
    assert post.status == 200 and post.event is not None
    assert (post.event.address, post.event.list_id, post.event.via) == (
        "bob@example.org", "newsletter", "http")
    assert answer("POST", token, SECRET, NOW).event.event_id == post.event.event_id
    for bad, reason in ((token, "expired"), (token[:-2] + "aa", "forged")):
        refused = answer("POST", bad, SECRET, NOW + 61 if reason == "expired" else NOW)
        assert (refused.status, refused.event, refused.reason) == (400, None, reason)
    evil = make_token(SECRET, "acme", "<script>", "bob@example.org", NOW + 60)
    assert "<script>" not in answer("GET", evil, SECRET, NOW).page()


def test_mail_to_the_unsubscribe_address_is_routed_as_unsubscribe():
    view = fold([SettingsChanged(catchall_domain="mycompany.com")])
    token = make_token(SECRET, "acme", "newsletter", "bob@example.org", NOW + 60)
    check = inbound.UnsubscribeCheck("unsubscribe", SECRET, NOW)

    def route(subject: str, to: str = "unsubscribe@mycompany.com") -> inbound.Route:
        raw = (f"From: bob@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n"
               "Message-ID: <u1@example.org>\r\n\r\nplease\r\n").encode()
        step = inbound.classify(parse_mail(raw), view, "", check)
        assert isinstance(step, inbound.Route)
        return step

    ok = route(f"unsubscribe {token}")
    assert (ok.route, ok.rule, ok.tenant, ok.target) == ("unsubscribe", "unsubscribe_mailto",
                                                          "acme", "newsletter")
    assert ok.unsubscribe["address"] == "bob@example.org" and ok.unsubscribe["via"] == "mailto"
    assert route(f"Re: unsubscribe {token}").route == "unsubscribe"
    bad = route(f"unsubscribe {token[:-3]}abc")
    assert bad.route == "reject" and not bad.unsubscribe and not bad.bounce_to
    assert "forged" in bad.reason
    assert route("unsubscribe please").route == "reject"
    assert route(f"unsubscribe {token}", to="sales@mycompany.com").route != "unsubscribe"
    late = inbound.classify(
        parse_mail(f"From: b@x.org\r\nTo: unsubscribe@mycompany.com\r\nSubject: unsubscribe "
                   f"{token}\r\n\r\nx".encode()),
        view, "", inbound.UnsubscribeCheck("unsubscribe", SECRET, NOW + 61))
    assert isinstance(late, inbound.Route) and late.route == "reject" and "expired" in late.reason


def test_unsubscribe_secret_is_made_once_and_shared(tmp_path):
    first = unsubscribe_secret("", "", str(tmp_path))
    assert first == unsubscribe_secret("", "", str(tmp_path)) and len(first) >= 32
    assert os.stat(tmp_path / "unsubscribe.secret").st_mode & 0o077 == 0
    with pytest.raises(SecretUnavailable, match="shorter than 16"):
        unsubscribe_secret("UNSUB", "", str(tmp_path), environ={"UNSUB": "short"})
    with pytest.raises(SecretUnavailable, match="cannot be read"):
        unsubscribe_secret("", str(tmp_path / "nope"), str(tmp_path))

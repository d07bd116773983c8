"""``split_address``'s shortcut for bare addresses and its memory give the
same answers (and the same errors) as the full parse."""

from __future__ import annotations

import random

import pytest

from schemas.addresses import (
    _PLAIN_ADDRESS,
    AddressError,
    _split_address,
    idna_domain,
    split_address,
)


def _answer(fn, value):  # type: ignore[no-untyped-def]
    try:
        return fn(value)
    except AddressError as exc:
        return ("error", str(exc))


EDGES = [
    "a@b.co", "A.B@Example.COM", "a+tag@x-y.example", "_x@b.cd", "-a@b.cd", "a-@b.cd",
    "a@-b.cd", "a@b-.cd", "a@b.c-", "a..b@c.de", "a.@c.de", ".a@c.de", "a@b", "a@localhost",
    "a@b..cd", "x" * 65 + "@b.cd", "a@" + "b" * 64 + ".cd", "1@2.3", "a@b.123", "a@b.c",
    "Bob <a@b.cd>", "a@b.cd ", " a@b.cd", "a@@b.cd", "a@b@c.de", "a b@c.de", "a@bücher.de",
    "a\r\n@b.cd", "", "@", "a@", "@b.cd",
]


@pytest.mark.parametrize("value", EDGES)
def test_edges_same_as_the_full_parse(value: str) -> None:
    assert _answer(split_address, value) == _answer(_split_address, value)
    assert _answer(split_address, value) == _answer(split_address, value)  # cached


def test_random_bare_addresses_same_as_the_full_parse() -> None:
    rnd = random.Random(7)
    alphabet = "abcXYZ019_+-.@"
    checked = 0
    for _ in range(20000):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(3, 14)))
        if rnd.random() < 0.5:  # shaped like an address more often
            value = value.replace("@", "") + "@" + "".join(
                rnd.choice("abc09-.") for _ in range(rnd.randint(3, 9))) + ".de"
        if _PLAIN_ADDRESS.fullmatch(value):
            checked += 1
        assert _answer(split_address, value) == _answer(_split_address, value), value
    assert checked > 2000


def test_idna_domain_cached_answers_and_errors() -> None:
    assert idna_domain("Bücher.DE") == "xn--bcher-kva.de"
    assert idna_domain("Bücher.DE") == "xn--bcher-kva.de"
    for _ in range(2):
        with pytest.raises(AddressError, match="has no dot"):
            idna_domain("nodot")


def test_a_plain_address_is_refused_as_check_address_refuses_it() -> None:
    """The plain-pattern shortcut checks only the local part's length and
    the domain; for every address of the pattern it says what
    ``check_address`` says (the same words), accepted or refused."""
    import random

    from schemas import addresses as A

    rnd = random.Random(7)
    alphabet = "abcXYZ019_+-."
    domains = ["x.test", "a-b.c", "-a.b", "a.b-", "x", "xn--bcher-kva.de", "a" * 64 + ".de",
               "a" * 63 + ".de", "A.B", "x..y", "localhost"]
    seen = 0
    for _ in range(20000):
        local = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 70)))
        value = f"{local}@{rnd.choice(domains)}"
        if not A._PLAIN_ADDRESS.fullmatch(value):
            continue
        seen += 1
        A._split_address_cached.cache_clear()
        try:
            A.check_address(value)
            want = None
        except A.AddressError as exc:
            want = str(exc)
        try:
            A._split_address_cached(value)
            got = None
        except A.AddressError as exc:
            got = str(exc)
        assert got == want, value
    assert seen > 5000


@pytest.mark.parametrize("value", ["bob@example.net", "Bob@Example.net", "a..b@x.test",
                                   "x@-y.test", "no-at", "a@b@c", "l" * 70 + "@x.test",
                                   "o@bücher.de", "a\r\n@x.test"])
def test_checked_address_answers_as_check_address(value: str) -> None:
    from schemas.addresses import check_address, checked_address

    for _ in range(2):  # the second answer from memory
        try:
            check_address(value)
            want = None
        except AddressError as exc:
            want = str(exc)
        try:
            checked_address(value)
            got = None
        except AddressError as exc:
            got = str(exc)
        assert got == want

"""Mail address parsing shared by events, the router and the publisher.

Pure functions, no I/O. Handles display names (including names that contain
an address, like ``"bob@x.com via CRM" <crm@y.com>``), case folding and IDNA
domains (``user@bücher.de`` matches a filter written ``xn--bcher-kva.de``).
"""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import formataddr, getaddresses, parseaddr
from functools import lru_cache

from .errors import PostlaneError

_LOCAL_OK = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\u0080-\U0010ffff]+$")
_LABEL_OK = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# a bare address of dot-separated atoms of these characters: what parseaddr
# gives back unchanged, with no display name (see split_address)
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+\-]+(?:\.[A-Za-z0-9_+\-]+)*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")


class AddressError(PostlaneError, ValueError):
    """An address is malformed; the message says what is wrong."""


def has_crlf(value: str) -> bool:
    return "\r" in value or "\n" in value


def idna_domain(domain: str) -> str:
    """Lower-case ASCII (punycode) form of a domain; raises AddressError."""
    if type(domain) is str:
        return _idna_domain_cached(domain)
    return _idna_domain(domain)


@lru_cache(maxsize=4096)
def _idna_domain_cached(domain: str) -> str:
    return _idna_domain(domain)  # a pure function of the text; errors are not cached


def _idna_domain(domain: str) -> str:
    d = domain.strip().rstrip(".").lower()
    if not d:
        raise AddressError("empty domain")
    try:
        ascii_d = d.encode("idna").decode("ascii") if not d.isascii() else d
    except UnicodeError as exc:
        raise AddressError(f"domain {domain!r} is not a valid international name: {exc}") from None
    labels = ascii_d.split(".")
    if len(labels) < 2 and ascii_d != "localhost":
        raise AddressError(f"domain {domain!r} has no dot")
    for label in labels:
        if not _LABEL_OK.match(label):
            raise AddressError(f"domain {domain!r} has an invalid label {label!r}")
    return ascii_d


def split_address(value: str) -> tuple[str, str]:
    """``'"Admin" <Admin@Example.com>'`` -> ``("Admin", "Admin@Example.com")``.

    Raises AddressError when there is no usable address, or CR/LF.
    Answers are remembered (a few thousand addresses): decoding an event
    parses its addresses, and the same ones come again and again."""
    if type(value) is str:
        return _split_address_cached(value)
    return _split_address(value)


@lru_cache(maxsize=16384)
def _split_address_cached(value: str) -> tuple[str, str]:
    if _PLAIN_ADDRESS.fullmatch(value):  # parseaddr would give ("", value): 50 us saved
        # what check_address checks that the pattern does not say already (no
        # line break, one @, the local part's characters and dots): the local
        # part's length and the domain
        local, _, domain = value.partition("@")
        if len(local) > 64:
            check_address(value)  # its own words
        idna_domain(domain)
        return "", value
    return _split_address(value)


def _split_address(value: str) -> tuple[str, str]:
    if has_crlf(value):
        raise AddressError(f"address {value!r} contains a line break (header injection?)")
    m = re.search(r"<([^<>]*)>\s*$", value)
    if m:
        addr = m.group(1).strip()
        name = value[: m.start()].strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"')
    else:
        name, addr = parseaddr(value)
        if not addr or "@" not in addr or addr != value.strip():
            if "@" not in value or " " in value.strip():
                raise AddressError(f"{value!r} is not an email address")
            name, addr = "", value.strip()
    check_address(addr)
    return name, addr


def check_address(addr: str) -> None:
    if has_crlf(addr):
        raise AddressError(f"address {addr!r} contains a line break")
    if addr.count("@") != 1:
        raise AddressError(f"{addr!r} must contain exactly one @")
    local, domain = addr.split("@")
    if not local or len(local) > 64 or not _LOCAL_OK.match(local):
        raise AddressError(f"{addr!r} has an invalid local part {local!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(f"{addr!r} has misplaced dots in the local part")
    idna_domain(domain)


def checked_address(addr: str) -> None:
    """``check_address``, its answers remembered (a bounce's or a
    complaint's address comes again and again; errors are not remembered)."""
    if type(addr) is str:
        _checked_address(addr)
    else:
        check_address(addr)


@lru_cache(maxsize=16384)
def _checked_address(addr: str) -> None:
    check_address(addr)


def normalize(addr: str) -> str:
    """Canonical form for matching: local part lower-cased, domain IDNA."""
    local, _, domain = addr.strip().rpartition("@")
    return f"{local.lower()}@{idna_domain(domain)}"


def domain_of(addr: str) -> str:
    return idna_domain(addr.rpartition("@")[2])


def format_address(name: str, addr: str) -> str:
    """Header form; non-ASCII names are RFC 2047-encoded by formataddr."""
    if not name:
        return addr
    return formataddr((name, addr))


def display_name(value: str) -> str:
    name, addr = split_address(value)
    return name


def parse_list(values: list[str]) -> list[tuple[str, str]]:
    """Parse a list of header values each holding one or more addresses."""
    out: list[tuple[str, str]] = []
    for value in values:
        if has_crlf(value):
            raise AddressError(f"address {value!r} contains a line break")
        for name, addr in getaddresses([value]):
            if not addr:
                continue
            check_address(addr)
            out.append((name, addr))
    return out


__all__ = [
    "Address",
    "AddressError",
    "check_address",
    "checked_address",
    "display_name",
    "domain_of",
    "format_address",
    "has_crlf",
    "idna_domain",
    "normalize",
    "parse_list",
    "split_address",
]

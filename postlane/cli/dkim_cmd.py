"""``postlane dkim keygen``: make a DKIM key pair and print the DNS record."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import fail


def txt_record(selector: str, domain: str, value: str) -> str:
    """A zone-file line; the value cut into strings of at most 255 characters
    (a TXT string's limit; resolvers join them)."""
    parts = [value[i:i + 255] for i in range(0, len(value), 255)]
    quoted = " ".join(f'"{p}"' for p in parts)
    return f"{selector}._domainkey.{domain}. IN TXT ( {quoted} )"


@click.group()
def dkim() -> None:
    """DKIM signing keys (see [[dkim]] in the config file)."""


@dkim.command("keygen")
@click.option("--domain", required=True, help="the From domain the key signs for")
@click.option("--selector", required=True, help="the DNS selector, e.g. pl2026")
@click.option("--algorithm", type=click.Choice(["rsa-sha256", "ed25519-sha256"]),
              default="rsa-sha256", show_default=True)
@click.option("--bits", type=int, default=2048, show_default=True, help="RSA key size")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="private key file (default: dkim-DOMAIN-SELECTOR.pem or .key)")
@click.option("--force", is_flag=True, help="overwrite an existing key file")
def keygen(domain: str, selector: str, algorithm: str, bits: int, out: str | None,
           force: bool) -> None:
    """Write a private key (mode 0600) and print the DNS TXT record to
    publish at SELECTOR._domainkey.DOMAIN, and the [[dkim]] entry."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from processors.delivery.dkim import ed25519_seed, ed25519_txt, load_key, rsa_txt
    from schemas import DkimKeyConfigured, InvalidEvent

    path = Path(out or f"dkim-{domain.lower()}-{selector}."
                + ("pem" if algorithm == "rsa-sha256" else "key"))
    try:
        entry = DkimKeyConfigured(domain=domain, selector=selector, key_file=str(path.resolve()),
                                  algorithm=algorithm)
        entry.__post_init__()
    except InvalidEvent as exc:
        fail("; ".join(exc.problems))
    if path.exists() and not force:
        fail(f"{path} exists: give another --out, or --force to replace it (the old key's "
             "DNS record then no longer matches)")
    if algorithm == "rsa-sha256":
        if bits < 1024:
            fail("--bits must be at least 1024 (2048 is what receivers expect)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        data = key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
        value = rsa_txt(key)
    else:
        ed = ed25519.Ed25519PrivateKey.generate()
        data = ed25519_seed(ed) + b"\n"
        value = ed25519_txt(ed)
    load_key(entry, data)  # what delivery will do with it
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    click.echo(f"wrote the private key to {path} (mode 0600: keep it secret, give only the "
               "delivery workers read access)")
    click.echo("\npublish this DNS TXT record:\n")
    click.echo(txt_record(selector, entry.domain.lower(), value))
    click.echo(f"\n(the value alone, for DNS web forms, at {selector}._domainkey."
               f"{entry.domain.lower()}):\n{value}")
    click.echo("\nthen add to the config file and run `postlane config apply`:\n")
    click.echo(f'[[dkim]]\ndomain = "{entry.domain}"\nselector = "{selector}"\n'
               f'key_file = "{path.resolve()}"\nalgorithm = "{algorithm}"')


COMMANDS = [dkim]

"""The TOML config file: parsing, validation, and planning what to publish."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from postlane.configfile import (
    ConfigFileError,
    events,
    load,
    parse,
    plan,
    server_event_from_options,
    to_toml,
    view_to_dict,
)
from processors.config.view import fold
from schemas import OutgoingServerConfigured, OutgoingServerRemoved, SettingsChanged

CONFIG = """
[settings]
default_from = "notifications"
catchall_domain = "mycompany.com"
bounce_alias = "bounce"
catchall_alias = "catchall"

[[servers]]
name = "primary"
host = "smtp.example.com"
port = 587
security = "starttls"
username = "noreply@example.com"
password_env = "SMTP_PASSWORD"
from_filter = "example.com, boss@other.com"
priority = 10
active = true
kind = "any"
tenant = ""
allow_self_signed = false
archive_bcc = ""
reply_to = ""

[[servers]]
name = "bulk"
host = "mass.example.net"
port = 465
security = "ssl"
username = "apikey"
sender = "news@example.com"
password_file = "/run/secrets/bulk"
priority = 20
kind = "mass"
daily_limit = 200
timeout = 30
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "postlane.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_file_to_events_to_view(tmp_path: Path) -> None:
    desired = load(write(tmp_path, CONFIG))
    view = fold(events(desired))
    assert view.settings.catchall_domain == "mycompany.com"
    assert view.settings.default_from == "notifications"
    assert sorted(view.servers) == ["bulk", "primary"]
    primary, bulk = view.servers["primary"], view.servers["bulk"]
    assert (primary.port, primary.security, primary.password_env) == (
        587,
        "starttls",
        "SMTP_PASSWORD",
    )
    assert primary.from_filter == "example.com, boss@other.com"
    assert (bulk.kind, bulk.daily_limit, bulk.sender, bulk.timeout) == (
        "mass",
        200,
        "news@example.com",
        30.0,
    )
    assert isinstance(bulk.timeout, float)
    assert [s.name for s in view.active_servers()] == ["primary", "bulk"]


def test_reapply_same_file_plans_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    view = fold(events(load(path)))
    assert plan(view, load(path)) == []


def test_plan_from_empty_view_publishes_everything(tmp_path: Path) -> None:
    pairs = plan(fold([]), load(write(tmp_path, CONFIG)))
    assert [k for k, _ in pairs] == ["settings", "server:primary", "server:bulk"]


def test_changed_server_emits_one_event(tmp_path: Path) -> None:
    view = fold(events(parse(CONFIG)))
    pairs = plan(view, parse(CONFIG.replace("port = 465", "port = 2525")))
    assert len(pairs) == 1
    key, event = pairs[0]
    assert key == "server:bulk"
    assert isinstance(event, OutgoingServerConfigured) and event.port == 2525


def test_changed_settings_emit_settings_changed() -> None:
    view = fold(events(parse(CONFIG)))
    pairs = plan(view, parse(CONFIG.replace('bounce_alias = "bounce"', 'bounce_alias = "rp"')))
    assert len(pairs) == 1 and pairs[0][0] == "settings"
    assert isinstance(pairs[0][1], SettingsChanged) and pairs[0][1].bounce_alias == "rp"


def test_removed_server_emits_removed() -> None:
    view = fold(events(parse(CONFIG)))
    without_bulk = CONFIG[: CONFIG.index('[[servers]]\nname = "bulk"')]
    pairs = plan(view, parse(without_bulk))
    assert len(pairs) == 1
    key, event = pairs[0]
    assert key == "server:bulk"
    assert isinstance(event, OutgoingServerRemoved) and event.name == "bulk"
    assert sorted(fold([event], view).servers) == ["primary"]


def test_password_refused(tmp_path: Path) -> None:
    text = CONFIG.replace('password_env = "SMTP_PASSWORD"', 'password = "hunter2"')
    with pytest.raises(ConfigFileError) as exc:
        load(write(tmp_path, text))
    msg = str(exc.value)
    assert "password_env" in msg and "password_file" in msg and "primary" in msg
    assert "hunter2" not in msg
    assert "postlane.toml" in msg


def test_unknown_key_named_with_allowed_ones() -> None:
    with pytest.raises(ConfigFileError) as exc:
        parse(CONFIG.replace("priority = 20", "priorty = 20"), "f.toml")
    msg = str(exc.value)
    assert "'priorty'" in msg and "priority" in msg and "from_filter" in msg and "bulk" in msg


def test_unknown_settings_key() -> None:
    with pytest.raises(ConfigFileError, match=r"\[settings\].*'catchall'"):
        parse("[settings]\ncatchall = 'x.com'\n")


def test_duplicate_server_name() -> None:
    with pytest.raises(ConfigFileError, match="duplicate server name 'primary'"):
        parse(CONFIG.replace('name = "bulk"', 'name = "primary"'))


def test_invalid_event_wrapped_with_server_name() -> None:
    with pytest.raises(ConfigFileError, match=r"'bulk'.*port 70000"):
        parse(CONFIG.replace("port = 465", "port = 70000"))
    with pytest.raises(ConfigFileError, match=r"'primary'.*port.*must be int"):
        parse(CONFIG.replace("port = 587", 'port = "587"'))


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        parse("[settings\n")
    with pytest.raises(ConfigFileError, match="cannot read"):
        load(tmp_path / "nope.toml")


def test_server_event_from_options() -> None:
    s = server_event_from_options("relay", host="smtp.x.com", port=465, security="ssl", sender=None)
    assert (s.name, s.host, s.port, s.security, s.sender) == ("relay", "smtp.x.com", 465, "ssl", "")
    updated = server_event_from_options("relay", base=s, port=2525, host=None)
    assert (updated.host, updated.port, updated.security) == ("smtp.x.com", 2525, "ssl")
    with pytest.raises(ConfigFileError, match="password_env"):
        server_event_from_options("relay", host="h.com", password="x")
    with pytest.raises(ConfigFileError, match="unknown key 'hots'"):
        server_event_from_options("relay", hots="h.com")


def test_view_to_dict_round_trips_through_toml() -> None:
    desired = parse(CONFIG)
    view = fold(events(desired))
    shown = view_to_dict(view)
    assert [s["name"] for s in shown["servers"]] == ["primary", "bulk"]
    assert shown["settings"]["catchall_domain"] == "mycompany.com"
    assert "event_id" not in shown["settings"] and "type" not in shown["servers"][0]
    assert tomllib.loads(to_toml(shown)) == shown
    assert plan(view, parse(to_toml(shown))) == []


LIMITS = """
[[servers]]
name = "primary"
host = "smtp.example.com"
daily_limit = 200
rate = "10/s"

[[tenants]]
name = "acme"
daily_limit = 500

[[domains]]
domain = "gmail.com"
rate = "60/min"

[[domains]]
domain = "*"
rate = "5/s"
"""


def test_limits_in_the_file_reach_the_view_and_the_limiter() -> None:
    from processors.limiter.limits import limits_from
    from streams.settings import Settings

    desired = parse(LIMITS)
    view = fold(events(desired))
    assert view.tenants["acme"].daily_limit == 500
    assert set(view.domains) == {"gmail.com", "*"}
    lim = limits_from(view, Settings(partitions=2))
    assert lim.servers["primary"].daily == 200 and lim.servers["primary"].rate == 10.0
    assert lim.tenants == {"acme": 500}
    assert lim.domains["gmail.com"] == (1.0, "60/min")
    assert plan(view, desired) == []
    # removing a tenant and a domain publishes their removal
    smaller = parse(LIMITS.split("[[tenants]]")[0])
    keys = [key for key, _ in plan(view, smaller)]
    assert keys == ["tenant:acme", "domain:*", "domain:gmail.com"]


def test_a_daily_limit_below_the_partition_count_is_exact_now_so_not_warned_about() -> None:
    from postlane.configfile import limit_warnings

    desired = parse('[[servers]]\nname = "tiny"\nhost = "h"\ndaily_limit = 3\n'
                    '[[tenants]]\nname = "acme"\ndaily_limit = 200\n')
    assert limit_warnings(desired, 4) == []  # one quota counts it (issue 15)


@pytest.mark.parametrize(("text", "fragment"), [
    ('[[domains]]\ndomain = "gmail.com"\nrate = "fast"\n', "must look like 10/s"),
    ('[[tenants]]\nname = "acme"\ndaily_limit = -1\n', "daily_limit must be >= 0"),
    ('[[servers]]\nname = "s"\nhost = "h"\nrate = "0/s"\n', "must be above 0"),
])
def test_bad_limits_are_refused_with_where(text: str, fragment: str) -> None:
    with pytest.raises(ConfigFileError, match=fragment):
        parse(text)


def test_unknown_tables_are_refused_all_named_with_the_known_one_they_look_like() -> None:
    text = CONFIG + '\n[[dkimm]]\ndomain = "x.test"\n\n[[webhookz]]\nurl = "http://h/"\n'
    with pytest.raises(ConfigFileError) as caught:
        parse(text, "postlane.toml")
    said = str(caught.value)
    # (dkim is a known table since [[dkim]] exists: the typo is named with it)
    assert "unknown tables 'dkimm' (did you mean 'dkim'?), 'webhookz'" in said, said
    assert "nothing applied" in said and "known tables: settings, servers" in said
    with pytest.raises(ConfigFileError, match=r"unknown table 'server' \(did you mean 'servers'"):
        parse('[server]\nname = "x"\n')
    with pytest.raises(ConfigFileError, match="unknown table 'debug'"):
        parse("debug = true\n")


def test_every_unknown_key_of_a_table_is_named() -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse('[[servers]]\nname = "a"\nhots = "h.test"\nprot = 25\nsecurity = "none"\n')
    said = str(caught.value)
    assert "unknown keys 'hots' (did you mean 'host'?), 'prot' (did you mean 'port'?)" in said


def test_a_from_filter_part_must_be_an_address_or_a_domain_where_config_is_made() -> None:
    with pytest.raises(ConfigFileError, match=r"from_filter: 'not a domain!' is neither"):
        parse('[[servers]]\nname = "a"\nhost = "h.test"\nfrom_filter = "x.test, not a domain!"\n')
    # an event already in the log stays readable
    from schemas import OutgoingServerConfigured, decode

    old = OutgoingServerConfigured(name="a", host="h.test", from_filter="not a domain!")
    assert decode(OutgoingServerConfigured, old.to_representation()).from_filter == "not a domain!"

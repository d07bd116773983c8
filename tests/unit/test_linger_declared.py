"""What may linger (streams/upstream_patches.py, fix_one_linger_for_every_topic):
a record something waits for must go at once, so the topics and tables a
processor awaits with ``streams.acked.acked`` are never declared ``linger``
(each awaited batch would wait out POSTLANE_BACKGROUND_LINGER_MS)."""

from __future__ import annotations

import pytest

from streams import tables, topics

# awaited by: delivery (the attempt on the log before SMTP, outcomes before the
# ledger), the limiter (its pass's events before its tables), the quota agent
# (grants before answers), the webhooks processor (results before the outbox)
AWAITED_TOPICS = [topics.DELIVERY, topics.COMMAND_RESULTS, topics.RELEASED, topics.HELD,
                  topics.QUOTA, topics.QUOTA_ANSWERS, topics.DELIVERY_QUOTA,
                  topics.WEBHOOKS, topics.WEBHOOK_EVENTS, topics.ROUTING_DECIDED,
                  topics.SEND_REQUESTED]
AWAITED_TABLES = [tables.DELIVERY_LEDGER, tables.LIMITER_QUOTA, tables.WEBHOOK_OUTBOX]


@pytest.mark.parametrize("spec", AWAITED_TOPICS, ids=lambda t: t.name)
def test_an_awaited_topic_does_not_linger(spec: topics.TopicSpec) -> None:
    assert not spec.linger, f"{spec.name}: a processor waits for its records"


@pytest.mark.parametrize("spec", AWAITED_TABLES, ids=lambda t: t.name)
def test_an_awaited_table_does_not_linger(spec: tables.TableSpec) -> None:
    assert not spec.linger, f"{spec.name}: a processor waits for its rows"


def test_what_lingers_is_what_the_readme_lists() -> None:
    # the status topic (console, `postlane status`), the mass lane's decisions
    # (the limiter holds mass mail for seconds anyway) and the changelogs of the
    # tables written without waiting (status, the limiter's own three)
    assert sorted(t.name for t in topics.ALL_TOPICS if t.linger) == [
        "routing-decided-mass", "status"]
    assert sorted(t.name for t in tables.ALL_TABLES if t.linger) == [
        "limiter-held", "limiter-mass", "limiter-meters", "status"]

"""Can the embedded broker drop a topic's old batches? (not in CI)

    .venv/bin/python -m bench.tansu_delete_records

Starts its own Tansu, writes 10 records to one partition and asks the
broker to delete the first 5 (DeleteRecords, kafka-python's
``KafkaAdminClient.delete_records``), then says what the client got,
whether the broker still runs and what it logged. On Tansu 0.6.0 the
memory engine's ``delete_records`` is ``todo!()``: the request panics the
connection's task ("not yet implemented") and the client sees the socket
close. Why it matters: a fetch there lists every batch its partition ever
stored (bench/README.md, "Why a campaign slows as the broker grows").
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from streams.embedded import EmbeddedBroker, free_port, tansu_binary  # noqa: E402
from streams.settings import Settings  # noqa: E402


def main() -> int:
    s = Settings(embedded_port=free_port())
    log_path = Path(tempfile.mkdtemp(prefix="postlane-delete-records-")) / "tansu.log"
    with EmbeddedBroker(s, log_path=log_path) as broker:
        assert broker.proc is not None
        print(f"{tansu_binary()} on {s.bootstrap} (pid {broker.proc.pid}), log {log_path}")
        admin = KafkaAdminClient(bootstrap_servers=s.bootstrap)
        producer = KafkaProducer(bootstrap_servers=s.bootstrap)
        try:
            admin.create_topics([NewTopic("delete-records", 1, 1)])
            for i in range(10):
                producer.send("delete-records", b"record %d" % i, partition=0).get(5)
            print("10 records written; asking DeleteRecords before offset 5")
            try:
                answer = admin.delete_records({TopicPartition("delete-records", 0): 5},
                                              timeout_ms=5000)
                print(f"  answered: {answer}")
            except Exception as exc:  # noqa: BLE001 - what the client got is the result
                print(f"  refused: {type(exc).__name__}: {exc}")
            print(f"  broker still running: {broker.proc.poll() is None}")
        finally:
            producer.close()
            admin.close()
    for line in log_path.read_text(errors="replace").splitlines():
        if "panicked" in line or "not yet implemented" in line:
            print(f"  broker log: {line.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

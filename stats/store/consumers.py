"""The consumers' signs of life: who is consuming, and when each one last showed it.

Each consumer stamps ``<prefix>:consumers`` with every batch (``apply``) and every empty poll
(``heartbeat``), and leaves it on a clean stop; ``pipeline_status`` and ``/health`` read it.
"""

from __future__ import annotations

from datetime import datetime

from orderpipe.timeutils import from_epoch_ms
from stats.store.base import StoreBase
from stats.store.errors import unavailable_on_redis_error
from stats.store.values import text


class ConsumersMixin(StoreBase):
    @unavailable_on_redis_error
    def heartbeat(self) -> None:
        """A sign of life from an idle consumer (every batch stamps its shards as well).

        A write, so it doubles as the consumer's Redis probe: a read-only replica answers
        PING but refuses this.
        """
        now = self._now_ms()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.ingest(0), "heartbeat_ms", now)
        if self.consumer_id:
            pipe.hset(self.keys.shared("consumers"), self.consumer_id, now)
        pipe.execute()

    @unavailable_on_redis_error
    def forget_consumer(self) -> None:
        """A consumer that stops cleanly leaves the list; a crashed one stays, and goes stale."""
        if self.consumer_id:
            self.client.hdel(self.keys.shared("consumers"), self.consumer_id)

    @unavailable_on_redis_error
    def consumers(self) -> dict[str, datetime]:
        """Every consumer's last sign of life, oldest first."""
        beats = {
            text(name): from_epoch_ms(int(value))
            for name, value in self.client.hgetall(self.keys.shared("consumers")).items()
        }
        return dict(sorted(beats.items(), key=lambda item: item[1]))

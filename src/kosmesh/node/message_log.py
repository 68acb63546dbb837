"""Which KLP messages get a row in the message log, and how many: bounded per sender.

Refusals of authenticated senders and non-task traffic are logged, for the operator; processed
tasks have their row in the task journal instead; unauthenticated garbage and replays get none
(a replay says nothing new, and answering each with a row let one peer fill the disk). Each
authenticated peer has a row budget (a token bucket), so no peer can write more than its share.
"""

from __future__ import annotations

import time

from kosmesh.identity import PeerId
from kosmesh.klp import REASON_REPLAY, KLPMessage, MessageType
from kosmesh.storage import MessageLog
from kosmesh.wire.ratelimit import BucketTable

ROWS_PER_S_PER_PEER = 5.0
ROW_BURST_PER_PEER = 100.0


class MessageLogger:
    """The KLP endpoint's observer: writes the rows worth keeping."""

    def __init__(self, log: MessageLog) -> None:
        self.log = log
        self._budget: BucketTable[PeerId] = BucketTable(ROWS_PER_S_PER_PEER, ROW_BURST_PER_PEER)

    def __call__(self, remote: PeerId, message: KLPMessage | None, status: str, reason: str | None) -> None:
        if message is None or reason == REASON_REPLAY:
            return
        if status == "processed" and message.type == MessageType.TASK_REQUEST:
            return
        if self._budget.take(remote, time.monotonic()):
            return
        self.log.log(
            message_id=message.metadata.message_id,
            direction="in",
            type=message.type.value,
            source=str(message.source),
            target=str(message.target),
            status=status,
            reason=reason,
            when=time.time(),
        )

"""The receiver's own policy, applied before anything the sender asks for.

A sender's envelope may ask for a minimum trust and declare a priority, but a sender must not be able
to lower the bar the receiver sets, nor jump the queue by declaring itself urgent:

- **minimum trust for tasks**: a TASK_REQUEST is processed only if the receiver's trust in its sender
  is at least ``max(min_trust_for_tasks, the sender's minimum_trust_score)``;
- **priority capped by trust**: the priority a message gets in the receiver's queue is the lower of
  the one it declares and the one its sender's trust allows (:data:`PRIORITY_CAPS_BY_TRUST`).

Trust is on the 0-10 scale; an unknown peer has the node's default trust (5.0 unless configured).
"""

from __future__ import annotations

from dataclasses import dataclass

from kosmesh.klp.model import MessageType, Priority

PRIORITY_CAPS_BY_TRUST: tuple[tuple[float, Priority], ...] = (
    (8.0, Priority.CRITICAL),
    (6.0, Priority.HIGH),
)
"""(minimum trust, highest priority allowed), most trusted first. Below the last threshold a sender
gets at most NORMAL, so an unknown key at the default trust 5.0 cannot declare HIGH or CRITICAL:

    trust >= 8.0   up to CRITICAL
    trust >= 6.0   up to HIGH
    otherwise      up to NORMAL  (LOW stays LOW)
"""


@dataclass(frozen=True)
class ReceiverPolicy:
    """What this node demands of a sender, whatever the sender asks for."""

    min_trust_for_tasks: float = 0.0
    priority_caps: tuple[tuple[float, Priority], ...] = PRIORITY_CAPS_BY_TRUST

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_trust_for_tasks <= 10.0:
            raise ValueError("min_trust_for_tasks must be between 0 and 10")
        thresholds = [threshold for threshold, _ in self.priority_caps]
        if thresholds != sorted(thresholds, reverse=True):
            raise ValueError("priority caps must be listed most trusted first")

    def minimum_trust(self, message_type: MessageType, asked: float) -> float:
        """The trust a sender needs: the receiver's floor for tasks, or the sender's own ask if higher."""
        if message_type is MessageType.TASK_REQUEST and self.min_trust_for_tasks > asked:
            return self.min_trust_for_tasks
        return asked

    def priority(self, declared: Priority, trust: float) -> Priority:
        """The priority a message from a sender with ``trust`` gets: never above what its trust allows."""
        if declared <= Priority.NORMAL:
            return declared
        for threshold, cap in self.priority_caps:
            if trust >= threshold:  # a NaN trust meets no threshold
                return declared if declared <= cap else cap
        return Priority.NORMAL

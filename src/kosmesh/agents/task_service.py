"""The agent task service: TASK_REQUEST in, the named agent run, the task journaled, the result out.

A plain-function agent runs inline as the request is read (no task to schedule); an ``async``
agent runs as its own task under the node's task timeout. Either way the task is journaled in
``node.db`` and committed before its answer leaves: the answer is the acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from kosmesh.agents.registry import AgentError, AgentRegistry, Task
from kosmesh.identity import PeerId
from kosmesh.klp import KLPMessage, MessageType, ProcessingResult
from kosmesh.storage import TaskJournal
from kosmesh.wire.service import Service

log = logging.getLogger(__name__)

Outcome = ProcessingResult | Awaitable[ProcessingResult]
NO_ELIGIBLE_AGENTS = "no_eligible_agents"


class AgentTaskService(Service):
    """Runs the agents of ``registry`` for tasks addressed to ``klp://<this node>/agents/<name>``."""

    name = "agents"
    message_types: ClassVar[frozenset[str]] = frozenset({MessageType.TASK_REQUEST.value})

    def __init__(self, registry: AgentRegistry, journal: TaskJournal, *, task_timeout_s: float) -> None:
        self.registry = registry
        self.journal = journal
        self.task_timeout_s = task_timeout_s

    def handle_message(self, message: KLPMessage, remote: PeerId) -> Outcome:
        """A result now (inline agents, refusals) or one to await (async agents)."""
        name = message.target.agent_name()
        spec = self.registry.get(name) if name is not None else None
        if spec is None:
            return ProcessingResult("rejected", reason=NO_ELIGIBLE_AGENTS)
        meta = message.metadata
        task = Task(
            task_id=meta.message_id,
            agent=spec.name,
            data=message.payload.data,
            source=message.source,
            priority=meta.priority,
            correlation_id=meta.correlation_id,
        )
        try:
            output = spec.handler(task)
        except Exception as exc:
            return self._failure(spec.name, meta.message_id, exc)
        if hasattr(type(output), "__await__"):
            return self._await_agent(spec.name, meta.message_id, output)
        return ProcessingResult("processed", data=output)

    async def _await_agent(self, agent: str, task_id: str, output: Awaitable[Any]) -> ProcessingResult:
        try:
            async with asyncio.timeout(self.task_timeout_s):
                return ProcessingResult("processed", data=await output)
        except TimeoutError:
            return ProcessingResult("rejected", reason="agent_timeout")
        except Exception as exc:
            return self._failure(agent, task_id, exc)

    @staticmethod
    def _failure(agent: str, task_id: str, exc: Exception) -> ProcessingResult:
        if isinstance(exc, AgentError):
            return ProcessingResult("rejected", reason=exc.reason[:200])
        log.error("agent %s failed on task %s", agent, task_id, exc_info=exc)
        return ProcessingResult("rejected", reason="agent_error")

    def commit(
        self,
        message: KLPMessage,
        result: ProcessingResult,
        received_at: float,
        then: Callable[[BaseException | None], None],
    ) -> None:
        """Journal the task, then let its answer go. A task no agent ran leaves no row."""
        name = message.target.agent_name()
        if name is None or result.reason == NO_ELIGIBLE_AGENTS:
            then(None)
            return
        self.journal.record(
            task_id=message.metadata.message_id,
            agent=name,
            source=str(message.source),
            status=result.status,
            reason=result.reason,
            request=message.payload.data,
            result=result.data,
            received_at=received_at,
            completed_at=time.time(),
            then=then,
        )

    def describe(self) -> dict[str, Any]:
        return {"agents": self.registry.describe()}

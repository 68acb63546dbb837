"""Agents hosted by a node: a handler under a name, with declared capabilities.

A handler is an ``async def`` (it runs as its own asyncio task, under the node's task
timeout) or a plain function (it runs inline as the request is read, with no task to
schedule: for quick, non-blocking work such as the built-in ``echo``). This is the minimal
registry the foundation needs; the full agent SDK (negotiation, migration, capability
routing) builds on it later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kosmesh.klp import KLPAddress, Priority


@dataclass(frozen=True, slots=True)
class Task:
    """A task as an agent sees it: verified sender, data, and the request's identity."""

    task_id: str
    agent: str
    data: Any
    source: KLPAddress
    priority: Priority
    correlation_id: str | None = None


# An async handler, or a plain function that must not block (it runs on the event loop inline).
AgentHandler = Callable[[Task], Awaitable[Any]] | Callable[[Task], Any]


class AgentError(Exception):
    """Raise from a handler to reject a task with a reason the sender will see."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    handler: AgentHandler
    capabilities: tuple[str, ...] = field(default=())
    description: str = ""


def echo_agent(task: Task) -> Any:
    """Built-in: answers with the data it was sent (inline: there is nothing to wait for)."""
    return task.data


class AgentRegistry:
    def __init__(self) -> None:
        self._agents: dict[str, AgentSpec] = {}

    def register(
        self,
        name: str,
        handler: AgentHandler,
        *,
        capabilities: tuple[str, ...] | list[str] = (),
        description: str = "",
    ) -> AgentSpec:
        if not name or "/" in name or len(name) > 128:
            raise ValueError("an agent name is 1-128 characters without '/'")
        spec = AgentSpec(name, handler, tuple(capabilities), description)
        self._agents[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self._agents.pop(name, None)

    def get(self, name: str) -> AgentSpec | None:
        return self._agents.get(name)

    def names(self) -> list[str]:
        return sorted(self._agents)

    def capabilities(self) -> list[str]:
        return sorted({c for spec in self._agents.values() for c in spec.capabilities})

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": s.name, "capabilities": list(s.capabilities), "description": s.description}
            for s in sorted(self._agents.values(), key=lambda s: s.name)
        ]

"""Agents hosted by a node: handlers under names, with declared capabilities, and the service that runs tasks."""

from kosmesh.agents.registry import AgentError, AgentHandler, AgentRegistry, AgentSpec, Task, echo_agent

__all__ = ["AgentError", "AgentHandler", "AgentRegistry", "AgentSpec", "Task", "echo_agent"]

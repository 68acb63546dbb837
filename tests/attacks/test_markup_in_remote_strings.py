"""Remote strings in the CLI: printed as they are, never read as Rich markup or terminal escapes.

Attack (issue 9): a peer declares a capability ``[/x]``; the CLI rendered remote strings as Rich
markup, so ``kosmesh peers`` died with a MarkupError from then on (the peer table is on disk),
and ``kosmesh task send`` did the same on a result or reason with markup in it. Raw escape
sequences (``ESC ]0;…`` sets the window title, ``ESC [2J`` clears the screen) went to the
terminal as they came. Here a hostile in-process node with such strings connects to a real
``kosmesh node run`` process, and the CLI is run against that process as a user would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from kosmesh import Node
from kosmesh.agents import AgentError, Task
from kosmesh.cli.process import NodeProcess
from kosmesh.klp.record_exchange import RecordExchangeService
from tests.attacks.conftest import LOOPBACK
from tests.cli.commands import kosmesh

pytestmark = pytest.mark.multiprocess

MARKUP = ["[/x]", "[bold red]boom", "[link=https://evil.example]click[/link]", "[/]"]
ESCAPES = ["\x1b]0;owned\x07title", "\x1b[2Jcleared", "\u202eright-to-left"]
RESULT = {"text": "[/x] [bold red]boom [/]", "nested": ["[blink]", "\x1b[31mred"]}
REASON = "[/reason] [bold]no[/bold] \x1b[2J"
ROLE = "[/role]\x1b[2J"  # what the hostile node says it is, in its record


@pytest.fixture
def target(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "target")
    try:
        yield proc.start()
    finally:
        proc.stop()


def assert_printed_literally(result_stdout: str, *texts: str) -> None:
    for text in texts:
        shown = text.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace("\u202e", "\\u202e")
        assert shown in result_stdout, (shown, result_stdout)
    assert "\x1b" not in result_stdout and "\x07" not in result_stdout and "\u202e" not in result_stdout


async def cli(target: NodeProcess, *args: str) -> tuple[int, str, str]:
    """The CLI against ``target``, in a thread: the in-process hostile node answers meanwhile."""
    done = await asyncio.to_thread(kosmesh, target.home, *args)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
async def hostile(tmp_path: Path, target: NodeProcess) -> AsyncIterator[Node]:
    """A node with markup and escapes in its capabilities and its agents' answers, connected to
    the target, once the target has stored its record."""
    async with Node(tmp_path / "hostile", listen=LOOPBACK) as node:

        async def answers_with_markup(task: Task) -> object:
            return RESULT

        def refuses_with_markup(task: Task) -> object:
            raise AgentError(REASON)

        node.register_agent("markup", answers_with_markup, capabilities=[*MARKUP, *ESCAPES])
        node.register_agent("refuser", refuses_with_markup)
        records = node.driver.get(RecordExchangeService)
        honest_record = records.record
        records.record = lambda: {**honest_record(), "role": ROLE}  # a node that lies about its role
        await node.connect(target.addrs[0])

        async def target_has_my_record() -> bool:
            code, out, _ = await cli(target, "peers", "--json")
            mine = [p for p in json.loads(out) if p["peer_id"] == str(node.peer_id)] if code == 0 else []
            return bool(mine) and set(MARKUP) <= set(mine[0]["capabilities"])

        await until(target_has_my_record, 30, "the target has the hostile peer's record")
        yield node


async def test_peers_prints_capabilities_literally(target: NodeProcess, hostile: Node) -> None:
    code, out, err = await cli(target, "peers")
    assert (code, err) == (0, ""), err
    assert str(hostile.peer_id) in out
    assert_printed_literally(out, *MARKUP, *ESCAPES, ROLE)
    code, out, err = await cli(target, "status")  # the connection to the hostile peer
    assert (code, err) == (0, ""), err
    assert str(hostile.peer_id) in out


async def test_task_send_prints_a_result_literally(target: NodeProcess, hostile: Node) -> None:
    code, out, err = await cli(target, "task", "send", f"klp://{hostile.peer_id}/agents/markup", "--data", '"[/x]"')
    assert (code, err) == (0, ""), err
    assert "Status: processed" in out
    assert_printed_literally(out, f"Data: {json.dumps(RESULT)}")


async def test_task_send_prints_a_reason_literally(target: NodeProcess, hostile: Node) -> None:
    code, out, err = await cli(target, "task", "send", f"klp://{hostile.peer_id}/agents/refuser", "--data", "1")
    assert code == 2 and err == "", err  # rejected: exit 2, by design, and no traceback
    assert "Status: rejected" in out
    assert_printed_literally(out, f"Reason: {REASON}")


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll a check that must itself await (it runs the CLI in a thread) until it holds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}") from None

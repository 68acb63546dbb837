"""The ``kosmesh`` command line. Every failure is one clear line on stderr and exit code 1."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kosmesh.cli import passphrase
from kosmesh.cli.client import ClientError, NodeClient
from kosmesh.cli.literal import bold, cells, line, literal
from kosmesh.identity.keystore import KeystoreError, PassphraseRequiredError
from kosmesh.node.config import ROLES, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="kOS Mesh: a federated P2P mesh for AI agents.")
node_app = typer.Typer(no_args_is_help=True, help="Run a node.")
task_app = typer.Typer(no_args_is_help=True, help="Send tasks to agents.")
config_app = typer.Typer(no_args_is_help=True, help="Node configuration.")
app.add_typer(node_app, name="node")
app.add_typer(task_app, name="task")
app.add_typer(config_app, name="config")

out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
_state: dict[str, Path] = {}


def fail(message: str) -> NoReturn:
    err.print(line(Text("error:", style="bold red"), " ", message), soft_wrap=True)
    raise typer.Exit(1)


def home() -> Path:
    return _state["home"]


def client() -> NodeClient:
    try:
        return NodeClient(home())
    except ClientError as exc:
        fail(str(exc))


def call(method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
    try:
        return client().call(method, path, body, timeout)
    except ClientError as exc:
        fail(str(exc))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.callback()
def main_options(
    home_dir: Annotated[
        Path | None,
        typer.Option("--home", envvar="KOSMESH_HOME", help="Node home directory (default ~/.kosmesh)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log to stderr.")] = False,
) -> None:
    _state["home"] = (home_dir or Path("~/.kosmesh")).expanduser()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)


@app.command()
def init(
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help=f"Encrypt a new key file with a passphrase, taken from {passphrase.ENV_VAR} or asked for "
            "(hidden, twice; stdin's first line when stdin is not a terminal). Never an argument.",
        ),
    ] = False,
) -> None:
    """Create the node home: config, key (mode 0600), database. Prints the peer id and DID.

    Setting KOSMESH_PASSPHRASE also encrypts a new key.
    """
    from kosmesh.identity import PeerId
    from kosmesh.identity.did_key import did_key_from_public_key
    from kosmesh.identity.keystore import key_file_is_encrypted
    from kosmesh.node.config import KEY_FILE
    from kosmesh.node.node import init_home

    key_path = home() / KEY_FILE
    try:
        if key_path.exists():
            if encrypt and not key_file_is_encrypted(key_path):
                fail(f"{key_path} already exists unencrypted; --encrypt only protects a new key")
            secret = passphrase.for_existing_key(key_path)
        else:
            secret = passphrase.for_new_key() if encrypt else passphrase.from_env()
        key, created = init_home(home(), passphrase=secret)
    except passphrase.PassphraseError as exc:
        fail(str(exc))
    except PassphraseRequiredError:
        fail(f"the key is passphrase-protected: set {passphrase.ENV_VAR}, or run from a terminal to be asked")
    except (KeystoreError, ConfigError, OSError) as exc:
        fail(str(exc))
    out.print(line("Created" if created else "Existing", " node home: ", home()))
    out.print(line("Peer ID: ", PeerId.from_public_key(key.public_key)))
    out.print(line("DID: ", did_key_from_public_key(key.public_key)))
    if created and secret is not None:
        out.print(line(f"Key encrypted: `node run` needs {passphrase.ENV_VAR} or, on a terminal, asks for it."),
                  soft_wrap=True)  # fmt: skip


@node_app.command("run")
def node_run(
    listen: Annotated[list[str] | None, typer.Option("--listen", help="Multiaddr to listen on (repeatable).")] = None,
    seed: Annotated[list[str] | None, typer.Option("--seed", help="Seed multiaddr to dial (repeatable).")] = None,
    role: Annotated[str | None, typer.Option(help=f"Node role: {' | '.join(ROLES)}.")] = None,
) -> None:
    """Run a node until SIGINT/SIGTERM. Prints one `listening <multiaddr>` line per address.

    An encrypted key is unlocked with KOSMESH_PASSPHRASE, or a hidden prompt on a terminal.
    """
    from kosmesh.cli.node_runner import run_node
    from kosmesh.node.config import KEY_FILE
    from kosmesh.node.node import Node, NodeError
    from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError

    for addr in [*(listen or []), *(seed or [])]:
        try:
            Multiaddr.parse(addr)
        except MultiaddrError as exc:
            fail(f"bad multiaddr {addr!r}: {exc}")
    if role is not None and role not in ROLES:
        fail(f"role must be one of {', '.join(ROLES)}")
    try:
        secret = passphrase.for_existing_key(home() / KEY_FILE)
        node = Node(home(), listen=listen or None, seeds=seed or None, role=role, passphrase=secret)
        asyncio.run(run_node(node))
    except passphrase.PassphraseError as exc:
        fail(str(exc))
    except PassphraseRequiredError:
        fail(f"the key is passphrase-protected: set {passphrase.ENV_VAR}, or run from a terminal to be asked")
    except (NodeError, KeystoreError, ConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """This node: peer id, DID, role, listen addresses, connections, agents."""
    data = call("GET", "/v1/status")
    if as_json:
        emit_json(data)
        return
    out.print(line(bold("Peer ID:"), " ", data["peer_id"]))
    out.print(line(bold("DID:"), "     ", data["did"]))
    out.print(line(bold("Role:"), "    ", data["role"], "    ", bold("Uptime:"), f" {data['uptime_s']}s"))
    for addr in data["listen_addrs"]:
        out.print(line(bold("Listen:"), "  ", addr))
    table = Table(title=f"Connections ({len(data['connections'])})")
    for col in ("peer", "direction", "address", "streams", "connection id"):
        table.add_column(col)
    for c in data["connections"]:
        table.add_row(*cells(c["peer_id"], c["direction"], c["remote_addr"], c["streams"], c["connection_id"]))
    out.print(table)
    agents = Table(title="Agents")
    agents.add_column("name")
    agents.add_column("capabilities")
    for a in data["agents"]:
        agents.add_row(*cells(a["name"], ", ".join(map(str, a["capabilities"]))))
    out.print(agents)
    waiting = [t for t in data.get("redial", []) if not t["connected"]]
    if waiting:
        redial = Table(title=f"Reconnecting ({len(waiting)})")
        for col in ("target", "seed", "failed dials", "next dial in"):
            redial.add_column(col)
        for t in waiting:
            due = "dialing" if t["next_dial_in_s"] is None else f"{t['next_dial_in_s']} s"
            redial.add_row(*cells(t["target"], "yes" if t["seed"] else "", t["failures"], due))
        out.print(redial)


@app.command()
def connect(multiaddr: Annotated[str, typer.Argument(help="/ip4/…/tcp/…/p2p/<peer id>")]) -> None:
    """Connect to a peer and print the connection and its trust score."""
    data = call("POST", "/v1/connect", {"multiaddr": multiaddr})
    out.print(line("Connected to peer: ", data["peer_id"]))
    out.print(line("Connection ID: ", data["connection_id"]))
    out.print(line("Trust Score: ", data["trust_score"]))
    if data.get("pinned_address"):
        warning = "warning: no /p2p/ in the address: accepted the peer that answered on first use, pinned to "
        err.print(line(warning, data["pinned_address"]))


@app.command()
def peers(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Federated Peer Status: every known peer with status, trust, capabilities, last seen."""
    data = call("GET", "/v1/peers")
    if as_json:
        emit_json(data)
        return
    table = Table(title="Federated Peer Status")
    for col in ("peer id", "status", "trust", "role", "capabilities", "last seen", "pinned (first use)"):
        table.add_column(col)
    for p in data:
        colour = "green" if p["status"] == "connected" else "dim"
        table.add_row(
            literal(p["peer_id"]),
            literal(p["status"], style=colour),
            *cells(
                f"{p['trust_score']:.1f}",
                p["role"] or "?",
                ", ".join(map(str, p["capabilities"])) or "-",
                p["last_seen"],
                p.get("pinned_address") or "",
            ),
        )
    out.print(table)
    if any(p.get("pinned_address") for p in data):
        out.print(
            "pinned: first met at an address given without /p2p/; another key answering there is refused",
            highlight=False,
        )


@app.command()
def trust(
    klp_address: Annotated[str, typer.Argument(help="klp://<peer id>/agents/<name>")],
    level: Annotated[float, typer.Option("--level", min=0, max=10, help="Trust level 0-10.")] = 8.0,
) -> None:
    """Add a trusted agent (its node's peers then meet trust requirements up to this level)."""
    data = call("POST", "/v1/trust", {"address": klp_address, "level": level})
    out.print(line("Added trusted agent: ", data["address"]))
    out.print(line("Trust Level: ", data["trust_level"]))


@task_app.command("send")
def task_send(
    klp_address: Annotated[str, typer.Argument(help="klp://<peer id>/agents/<name>")],
    data: Annotated[str, typer.Option("--data", help="Task data as JSON.")] = "null",
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the response.")] = 30.0,
    priority: Annotated[str, typer.Option(help="LOW | NORMAL | HIGH | CRITICAL")] = "NORMAL",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send a signed TASK_REQUEST and print the verified response."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        fail(f"--data is not valid JSON: {exc}")
    reply = call(
        "POST", "/v1/task",
        {"address": klp_address, "data": payload, "timeout": timeout, "priority": priority},
        timeout=timeout + 10,
    )
    if as_json:
        emit_json(reply)
    else:
        colour = {"processed": "green", "rejected": "red", "deferred": "yellow"}.get(reply["status"], "white")
        out.print(line("Status: ", literal(reply["status"], style=colour)))
        if reply.get("reason"):
            out.print(line("Reason: ", reply["reason"]))
        if reply.get("retry_after") is not None:
            out.print(line("Retry after: ", reply["retry_after"], "s"))
        out.print(line("Responder: ", reply["responder"], f"  ({reply['rtt_ms']:.1f} ms)"))
        out.print(line("Data: ", json.dumps(reply["result"])))
    if reply["status"] != "processed":
        raise typer.Exit(2)


@config_app.command("export")
def config_export() -> None:
    """The node configuration as JSON (never includes keys or tokens); works with or without a running node."""
    try:
        data = NodeClient(home()).call("GET", "/v1/config")
    except ClientError:
        data = _config_from_home()
    emit_json(data)


def _config_from_home() -> dict[str, Any]:
    """The same view as the API's, read from the home of a node that is not running."""
    from kosmesh.identity import PeerId
    from kosmesh.identity.did_key import did_key_from_public_key
    from kosmesh.identity.keystore import load_key
    from kosmesh.node.config import KEY_FILE, load_config

    if not (home() / "config.toml").exists():
        fail(f"no node home at {home()}; run `kosmesh --home {home()} init` first")
    try:
        data = load_config(home()).to_dict()
        key = load_key(home() / KEY_FILE, passphrase.for_existing_key(home() / KEY_FILE))
    except PassphraseRequiredError:
        fail(f"the key is passphrase-protected: set {passphrase.ENV_VAR}, or start the node and export from it")
    except passphrase.PassphraseError as exc:
        fail(str(exc))
    except (ConfigError, KeystoreError) as exc:
        fail(str(exc))
    data["peer_id"] = str(PeerId.from_public_key(key.public_key))
    data["did"] = did_key_from_public_key(key.public_key)
    data["home"] = str(home())
    return data


@app.command()
def demo(
    nodes: Annotated[int, typer.Option(min=2, max=16, help="Number of node processes.")] = 3,
    tasks: Annotated[int, typer.Option(min=1, max=10_000, help="Tasks per ordered pair of nodes.")] = 20,
) -> None:
    """Start real node processes on loopback, connect them, send tasks, print a summary."""
    from kosmesh.cli.demo import run_demo

    try:
        code = run_demo(nodes=nodes, tasks=tasks, console=out)
    except ClientError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""config.toml: every section written, read back as written, and every bound checked with a clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kosmesh.node.config import ConfigError, NodeConfig, load_config, write_config


def test_a_written_config_reads_back_the_same(tmp_path: Path) -> None:
    cfg = NodeConfig()
    cfg.klp.peer_cpu_per_s, cfg.klp.min_trust_for_tasks = 0.5, 3.0
    cfg.wire.max_pending_inbound, cfg.wire.node_max_buffered_in = 7, 1 << 20
    cfg.storage.tasks_max_rows, cfg.storage.retention_interval_s = 123, 9.0
    cfg.trust.peers = {"12D3KooWexample": 7.5}
    write_config(tmp_path, cfg)
    assert load_config(tmp_path).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("section", "setting", "value"),
    [
        ("klp", "peer_cpu_per_s", "0"),
        ("klp", "trusted_peer_multiplier", "0.5"),
        ("klp", "min_trust_for_tasks", "11"),
        ("klp", "replay_per_peer", "0"),
        ("wire", "max_pending_inbound", "0"),
        ("wire", "reserved_outbound", "512"),
        ("wire", "stream_open_rate", "0"),
        ("wire", "node_max_buffered_in", "1000"),
        ("storage", "tasks_max_rows", "0"),
        ("storage", "messages_max_age_days", "0"),
        ("storage", "retention_interval_s", "-1"),
    ],
)
def test_an_out_of_bounds_setting_is_refused_by_name(tmp_path: Path, section: str, setting: str, value: str) -> None:
    (tmp_path / "config.toml").write_text(f"[{section}]\n{setting} = {value}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{section}.{setting}")):
        load_config(tmp_path)


def test_an_unknown_setting_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[storage]\ntasks_max_rowz = 5\n")
    with pytest.raises(ConfigError, match=r"unknown setting storage\.tasks_max_rowz"):
        load_config(tmp_path)

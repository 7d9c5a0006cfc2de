"""OmniSparseConfig: validation names the offending field, JSON round trip, unknown keys rejected."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from omnisparse import OmniSparseConfig

# (field, a bad value) -- every validated field, with values at or just past the documented bounds.
BAD_VALUES = [
    ("block_size", 0),
    ("block_size", -16),
    ("block_size", 16.0),
    ("gamma", 0.0),
    ("gamma", 1.01),
    ("min_budget_blocks", -1),
    ("max_budget_ratio", 0.0),
    ("max_budget_ratio", 1.5),
    ("sink_blocks", -1),
    ("local_blocks", -1),
    ("lazy_threshold", -0.1),
    ("lazy_threshold", 1.1),
    ("lazy_keep_ratio", -0.01),
    ("lazy_keep_ratio", 1.01),
    ("lazy_mode", "drop"),
    ("min_seq_len", -1),
    ("dense_layers", [0, -1]),
    ("dense_layers", ["3"]),
    ("decode_gamma", 0.0),
    ("decode_gamma", 2.0),
    ("observation_window", 0),
    ("head_visual_threshold", -0.5),
    ("head_visual_threshold", 1.5),
    ("recent_window", -1),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_invalid_value_names_the_field(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"OmniSparseConfig\.{name} must be") as info:
        OmniSparseConfig(**{name: value})  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


def test_boundary_values_are_accepted() -> None:
    config = OmniSparseConfig(
        block_size=1,
        gamma=1.0,
        min_budget_blocks=0,
        max_budget_ratio=1.0,
        sink_blocks=0,
        local_blocks=0,
        lazy_threshold=0.0,
        lazy_keep_ratio=1.0,
        lazy_mode="skip",
        min_seq_len=0,
        dense_layers=(0, 3),  # type: ignore[arg-type]
        decode_gamma=1.0,
        observation_window=1,
        head_visual_threshold=0.0,
        recent_window=0,
    )
    assert config.dense_layers == [0, 3] and isinstance(config.dense_layers, list)


def test_defaults_are_valid_and_documented_values() -> None:
    config = OmniSparseConfig()
    assert (config.block_size, config.gamma, config.lazy_mode, config.slim_decode) == (64, 0.9, "local", True)
    assert config.dense_layers == [] and OmniSparseConfig().dense_layers is not config.dense_layers


def test_json_round_trip(tmp_path: Path) -> None:
    config = OmniSparseConfig(
        block_size=32,
        gamma=0.75,
        min_budget_blocks=3,
        lazy_keep_ratio=0.25,
        lazy_mode="skip",
        min_seq_len=256,
        dense_layers=[0, 5],
        slim_decode=False,
        decode_gamma=0.8,
        observation_window=7,
        head_visual_threshold=0.1,
        recent_window=5,
    )
    path = config.save(tmp_path / "omnisparse.json")
    assert path == tmp_path / "omnisparse.json"
    data = json.loads(path.read_text())
    assert set(data) == {f.name for f in fields(OmniSparseConfig)}
    assert data["dense_layers"] == [0, 5] and data["lazy_mode"] == "skip"
    loaded = OmniSparseConfig.load(path)
    assert loaded == config
    assert loaded != OmniSparseConfig()
    assert OmniSparseConfig.from_dict(config.to_dict()) == config


def test_partial_json_fills_defaults(tmp_path: Path) -> None:
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"gamma": 0.5}))
    loaded = OmniSparseConfig.load(path)
    assert loaded.gamma == 0.5 and loaded.block_size == OmniSparseConfig().block_size


def test_unknown_keys_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['bogus', 'gama'\]"):
        OmniSparseConfig.from_dict({"gamma": 0.5, "gama": 0.5, "bogus": 1})
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"block_sz": 16}))
    with pytest.raises(ValueError, match="block_sz"):
        OmniSparseConfig.load(path)


def test_load_validates_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"gamma": 1.5}))
    with pytest.raises(ValueError, match=r"OmniSparseConfig\.gamma"):
        OmniSparseConfig.load(path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"gamma"'])
def test_load_rejects_non_object_json(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"broken\.json"):
        OmniSparseConfig.load(path)

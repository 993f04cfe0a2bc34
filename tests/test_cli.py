"""Tests for jaxseq.cli: flag parsing, --config=FILE.json, save_config."""

import dataclasses
import json

import pytest

from jaxseq import cli


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    hidden_size: int = 128  # LSTM width
    learning_rate: float = 1e-3
    use_peephole: bool = False
    sizes: tuple[int, ...] = (4, 8)
    out_dir: str = "runs/test"


def test_no_flags_gives_defaults():
    assert cli.parse(Config, []) == Config()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--hidden_size=64"], {"hidden_size": 64}),
        (["--hidden_size", "64"], {"hidden_size": 64}),
        (["--learning_rate=3e-4"], {"learning_rate": 3e-4}),
        (["--learning_rate=1"], {"learning_rate": 1.0}),
        (["--use_peephole=True"], {"use_peephole": True}),
        (["--use_peephole=False"], {"use_peephole": False}),
        (["--sizes", "1", "2", "3"], {"sizes": (1, 2, 3)}),
        (["--out_dir=runs/a b"], {"out_dir": "runs/a b"}),
        (["--seed=3", "--seed=5"], {"seed": 5}),
    ],
)
def test_flags_are_converted_to_field_types(argv, expected):
    config = cli.parse(Config, argv)
    assert config == dataclasses.replace(Config(), **expected)
    for name, value in expected.items():
        assert type(getattr(config, name)) is type(value)


def test_unknown_flag_exits_naming_it(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.parse(Config, ["--hiden_size=64"])
    assert excinfo.value.code == 2
    assert "--hiden_size" in capsys.readouterr().err


def test_unconvertible_value_exits_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.parse(Config, ["--hidden_size=abc"])
    assert excinfo.value.code == 2
    assert "--hidden_size" in capsys.readouterr().err


def test_json_config_overrides_defaults_and_flags_override_json(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hidden_size": 32, "learning_rate": 1, "sizes": [2, 3]}))
    for argv in (
        [f"--config={path}", "--hidden_size=16"],
        ["--hidden_size=16", "--config", str(path)],  # position of --config does not matter
    ):
        config = cli.parse(Config, argv)
        assert config == Config(hidden_size=16, learning_rate=1.0, sizes=(2, 3))
        assert type(config.learning_rate) is float


def test_unknown_json_key_raises_naming_it_and_listing_valid_keys(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hidden": 32}))
    with pytest.raises(ValueError, match=r"'hidden'.*'hidden_size'"):
        cli.parse(Config, [f"--config={path}"])


def test_json_value_of_wrong_type_raises(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hidden_size": "32"}))
    with pytest.raises(TypeError, match="hidden_size"):
        cli.parse(Config, [f"--config={path}"])


def test_config_flag_without_path_exits(capsys):
    with pytest.raises(SystemExit):
        cli.parse(Config, ["--config"])
    assert "--config" in capsys.readouterr().err


def test_save_config_round_trips_through_parse(tmp_path):
    config = Config(seed=7, learning_rate=0.25, use_peephole=True, sizes=(1,), out_dir="x")
    path = cli.save_config(config, tmp_path / "new" / "run")
    assert path == tmp_path / "new" / "run" / "config.json"
    assert json.loads(path.read_text())["sizes"] == [1]
    assert cli.parse(Config, [f"--config={path}"]) == config

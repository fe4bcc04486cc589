import tomllib
from pathlib import Path

import pytest

from mammofuse.cli import main
from mammofuse.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


class TestLoadConfig:
    def test_an_empty_file_gives_the_defaults_with_paths_resolved(self, tmp_path):
        cfg = load_config(write(tmp_path, ""))
        assert cfg.labels.threshold == 75
        assert cfg.images.root == (tmp_path / "dicom").resolve()
        assert cfg.cache_dir == (tmp_path / "mammofuse-work" / "cache").resolve()

    def test_unknown_key_names_the_key_and_what_is_allowed(self, tmp_path):
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, "[labels]\nthreshhold = 70\n"))
        assert "labels.threshhold: unknown key" in str(err.value)
        assert "threshold" in str(err.value).split("allowed here:")[1]

    def test_bad_value_names_the_key_and_the_value(self, tmp_path):
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, "[labels]\nthreshold = 140\n"))
        assert "labels.threshold" in str(err.value) and "140" in str(err.value)

    def test_bad_choice_lists_the_choices(self, tmp_path):
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, "[clinical]\nna_policy = 'guess'\n"))
        assert "clinical.na_policy" in str(err.value) and "'drop'" in str(err.value)

    def test_pattern_without_its_group_is_rejected(self, tmp_path):
        with pytest.raises(ConfigError, match="side_pattern.*named group"):
            load_config(write(tmp_path, "[images]\nside_pattern = '_(L|R)_'\n"))

    def test_table_source_needs_a_table(self, tmp_path):
        with pytest.raises(ConfigError, match="images.table"):
            load_config(write(tmp_path, "[images]\nsource = 'table'\n"))

    def test_invalid_toml_is_a_config_error(self, tmp_path):
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_config(write(tmp_path, "[labels\n"))


class TestConfigCommand:
    def test_show_prints_defaults_that_load_back(self, tmp_path, capsys):
        assert main(["config", "--show"]) == 0
        text = capsys.readouterr().out
        assert tomllib.loads(text)["labels"]["threshold"] == 75
        assert load_config(write(tmp_path, text)).clinical.na_policy == "drop"

    def test_bad_config_exits_2_without_traceback(self, tmp_path, capsys):
        assert main(["config", "--check", str(write(tmp_path, "[split]\nfolds = 1\n"))]) == 2
        out = capsys.readouterr().out
        assert "split.folds" in out and "Traceback" not in out

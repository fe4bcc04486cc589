import re
import tomllib
from pathlib import Path

import pytest

from mammofuse.cli import main
from mammofuse.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
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

    def test_a_synthetic_2d_pattern_that_is_no_regex_is_rejected(self, tmp_path):
        with pytest.raises(ConfigError, match="synthetic_2d_pattern.*not a valid regular expression"):
            load_config(write(tmp_path, "[images]\nsynthetic_2d_pattern = 'C-View('\n"))

    def test_pattern_without_its_group_is_rejected(self, tmp_path):
        with pytest.raises(ConfigError, match="side_pattern.*named group"):
            load_config(write(tmp_path, "[images]\nside_pattern = '_(L|R)_'\n"))

    def test_table_source_needs_a_table(self, tmp_path):
        with pytest.raises(ConfigError, match="images.table"):
            load_config(write(tmp_path, "[images]\nsource = 'table'\n"))

    @pytest.mark.parametrize(
        "clinical, said",
        [
            ("rename = { Alter = 'age', Age = 'age' }", "several columns renamed to ['age']"),
            ("rename = { Pat = 'patient_id' }", "a column renamed to a key column (['patient_id'])"),
            ("recode = { erstatus = { pos = 'positive' } }", "recode: ['erstatus'] not among the features"),
        ],
    )
    def test_a_rename_or_recode_that_cannot_work_is_refused(self, tmp_path, clinical, said):
        with pytest.raises(ConfigError, match=re.escape(said)):
            load_config(write(tmp_path, f"[clinical]\n{clinical}\n"))

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


class TestCohortAndExperiment:
    def test_the_label_column_cannot_also_be_a_clinical_input(self, tmp_path):
        text = "[labels]\ncolumn = 'ki67'\n"
        with pytest.raises(ConfigError, match="'ki67' is also a clinical input.*target leakage"):
            load_config(write(tmp_path, text))

    def test_the_parts_hold_their_own_sections(self, tmp_path):
        cfg = load_config(write(tmp_path, "[labels]\nthreshold = 60\n[train]\nlr = 0.01\n"))
        assert cfg.cohort.labels.threshold == 60 and not hasattr(cfg.cohort, "train")
        assert cfg.experiment.train.lr == 0.01 and not hasattr(cfg.experiment, "labels")

    def test_the_cohort_record_survives_moving_the_whole_tree(self, tmp_path):
        a = load_config(write(tmp_path / "a", ""))
        b = load_config(write(tmp_path / "b", ""))
        assert a.images.root != b.images.root and a.record() == b.record()
        c = load_config(write(tmp_path / "c", "[labels]\nthreshold = 60\n"))
        assert c.record()["labels"]["threshold"] == 60 != a.record()["labels"]["threshold"]


class TestEndpointNames:
    def test_defaults_describe_eic_and_a_binary_endpoint_reads_as_itself(self, tmp_path):
        assert (
            "EIC positive (label 1): invasive_fraction < 75 %"
            in load_config(write(tmp_path, "")).labels.definition
        )
        text = "[labels]\nkind = 'binary'\ncolumn = 'upstaged'\nname = 'DCIS upstaging'\n"
        text += "positive = 'upstaged'\nnegative = 'pure DCIS'\n"
        labels = load_config(write(tmp_path, text)).labels
        assert labels.definition == "upstaged (label 1): upstaged = 1; pure DCIS (label 0): upstaged = 0"


class TestAugmentation:
    def test_rotation_settings_are_honoured_not_capped(self):
        from mammofuse.config import DataConfig
        from mammofuse.data.balance import balancing_augmentation, standard_augmentation

        cfg = DataConfig(augment_rotation_deg=20.0, rotation_deg=30.0)
        assert standard_augmentation(cfg).transforms[0].degrees == [-20.0, 20.0]
        assert balancing_augmentation(cfg).degrees == [-30.0, 30.0]
        with pytest.raises(ValueError, match="less than or equal to 45"):
            DataConfig(rotation_deg=60.0)

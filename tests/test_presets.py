import pytest

from mammofuse.config import ConfigError, load_config
from mammofuse.presets import apply_preset, available
from mammofuse.registry import BACKBONES


@pytest.fixture
def cohort_config(tiny_cohort_master):
    return load_config(tiny_cohort_master / "cohort.toml")


class TestBuiltInPresets:
    @pytest.mark.parametrize("name", available())
    def test_every_built_in_preset_applies_to_a_cohort_config(self, name, cohort_config):
        cfg = apply_preset(cohort_config, name)
        assert cfg.model.backbone in BACKBONES
        assert cfg.cohort == cohort_config.cohort  # a preset never changes what the data is

    def test_the_study_variants_differ_from_seed_parity_only_in_balancing(self, cohort_config):
        base = apply_preset(cohort_config, "seed_parity")
        copy = apply_preset(cohort_config, "seed_parity_copy")
        assert copy.data.balance == "copy" and copy.model == base.model and copy.train == base.train

    def test_a_relative_extends_is_read_from_the_presets_own_folder(
        self, cohort_config, tmp_path, monkeypatch
    ):
        """A study's presets kept together work from any folder; one of the same name in the working folder
        was taken instead."""
        (tmp_path / "presets").mkdir()
        (tmp_path / "presets" / "base.toml").write_text('extends = "demo_cpu"\n[train]\nbatch_size = 8\n')
        (tmp_path / "presets" / "variant.toml").write_text('extends = "base.toml"\n[model]\ndropout = 0.3\n')
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "base.toml").write_text("[train]\nbatch_size = 2\n")  # another study's
        monkeypatch.chdir(tmp_path / "elsewhere")
        cfg = apply_preset(cohort_config, str(tmp_path / "presets" / "variant.toml"))
        assert (cfg.train.batch_size, cfg.model.dropout, cfg.model.backbone) == (8, 0.3, "tiny_cnn")


class TestPresetErrors:
    def test_a_preset_that_sets_a_cohort_section_is_refused(self, cohort_config, tmp_path):
        path = tmp_path / "bad.toml"
        path.write_text("[split]\nseed = 3\n[train]\nlr = 0.1\n")
        with pytest.raises(ConfigError, match=r"sets split, which a preset may not change"):
            apply_preset(cohort_config, str(path))

    def test_a_preset_that_extends_itself_is_a_clear_error(self, cohort_config, tmp_path):
        (tmp_path / "a.toml").write_text(f'extends = "{tmp_path / "b.toml"}"\n')
        (tmp_path / "b.toml").write_text(f'extends = "{tmp_path / "a.toml"}"\n')
        with pytest.raises(ConfigError, match="goes round in a loop"):
            apply_preset(cohort_config, str(tmp_path / "a.toml"))

    def test_an_unknown_preset_lists_the_known_ones(self, cohort_config):
        with pytest.raises(ConfigError, match="unknown preset 'fastest'.*seed_parity"):
            apply_preset(cohort_config, "fastest")

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

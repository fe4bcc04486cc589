import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mammofuse.cli import main
from mammofuse.imaging.cache import load_entry
from tests.cohort.helpers import edit_config


@pytest.fixture
def two_settings(ready, capsys):
    """The ready cohort's cache copied to a folder of its own (the master's is shared by other tests), one run
    trained on its settings (3 breasts' entries in its data.csv), then the cohort preprocessed again at
    another size into the same cache: the first settings' entries are read by that run alone."""
    work = ready / "work"
    first = pd.read_csv(work / "preprocessed.csv", dtype=str)
    master = Path(first["cc_cache"].iloc[0]).parents[2]
    cache = ready.parent / "cache"
    shutil.copytree(master, cache)
    for column in ("cc_cache", "mlo_cache"):
        first[column] = first[column].str.replace(str(master), str(cache), regex=False)
    run = work / "runs" / "old"
    run.mkdir(parents=True)
    first.head(3).to_csv(run / "data.csv", index=False)
    edit_config(ready, preprocess={"size": [48, 24], "cache_dir": str(cache)})
    assert main(["preprocess", str(ready / "cohort.toml")]) == 0
    capsys.readouterr()
    return ready, cache, first


def test_the_listing_says_what_each_settings_folder_holds_and_what_a_work_folder_uses(two_settings, capsys):
    ready, cache, first = two_settings
    assert main(["cache", str(cache), "--keep", str(ready / "work")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    folders = len(list(cache.glob("*/index.json")))
    assert f"{folders} settings folders" in shown and "breast 48x24" in shown
    now = pd.read_csv(ready / "work" / "preprocessed.csv")
    assert f"breast 48x24 {2 * len(now)} entries ({2 * len(now)} used)" in shown  # every image, read by it
    assert f"{2 * len(first)} entries (6 used)" in shown  # the first: the old run's three breasts, two views
    assert "--prune` removes them" in shown


def test_prune_keeps_every_entry_a_kept_work_folder_reads_and_nothing_else(two_settings, capsys):
    ready, cache, first = two_settings
    before = {p: p.read_bytes() for p in cache.rglob("*.npy")}
    assert main(["cache", str(cache), "--keep", str(ready / "work"), "--prune"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    kept = set(cache.rglob("*.npy"))
    now = pd.read_csv(ready / "work" / "preprocessed.csv", dtype=str)
    read = {*now["cc_cache"], *now["mlo_cache"], *first.head(3)["cc_cache"], *first.head(3)["mlo_cache"]}
    assert {str(p) for p in kept} == read
    assert {p.with_suffix(".npy") for p in cache.rglob("*.png")} == kept  # their display copies stay
    assert all(p.read_bytes() == before[p] for p in kept)  # what stays is untouched
    for path in read:
        load_entry(path)  # readable, its checksum in the index as before
    removed = len(before) - len(kept)
    assert f"removed {removed} entries" in shown and removed >= 2 * (len(first) - 3)
    indexes = [json.loads(p.read_text()) for p in cache.glob("*/index.json")]
    assert sorted(len(i["entries"]) for i in indexes) == sorted([6, len(read) - 6])
    assert main(["cache", str(cache), "--keep", str(ready / "work"), "--prune"]) == 0
    assert "removed 0 entries" in " ".join(capsys.readouterr().out.split())


def test_a_settings_folder_nothing_uses_goes_whole_and_a_wrong_folder_is_a_clear_error(two_settings, capsys):
    ready, cache, _ = two_settings
    shutil.rmtree(ready / "work" / "runs" / "old")
    assert main(["cache", str(cache), "--keep", str(ready / "work"), "--prune"]) == 0
    assert len(list(cache.glob("*/index.json"))) == 1 and "1 settings folder," in capsys.readouterr().out
    assert main(["cache", str(cache), "--keep", str(ready), "--prune"]) == 2
    assert "not a work folder" in capsys.readouterr().out
    assert main(["cache", str(cache), "--prune"]) == 2  # pruning needs the folders to keep
    assert "--prune needs --keep" in capsys.readouterr().out

"""A full or read-only disk, for real (a tmpfs): one line naming the place and exit 2, before the work
when the check can see it, and nothing already written damaged when the disk fills during the work."""

import shutil

import pandas as pd
import torch

from mammofuse.cli import main
from mammofuse.config import load_config
from mammofuse.storage import disk_error
from tests.cohort.helpers import edit_config
from tests.disks import fill, read_only, tmpfs


def one_line_error(out: str, what: str) -> None:
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and what in errors[0], out


class TestOutputPath:
    def test_a_file_where_the_output_folder_should_be_is_one_line(self, tiny_cohort, tmp_path, capsys):
        in_the_way = tmp_path / "out"
        in_the_way.write_text("a file, not a folder")
        for out in (in_the_way, in_the_way / "work"):
            assert main(["ingest", str(tiny_cohort / "cohort.toml"), "--out", str(out)]) == 2
            one_line_error(capsys.readouterr().out, f"{out}: ")


class TestReadOnlyDisk:
    def test_ingest_into_a_read_only_folder_stops_before_reading(self, tiny_cohort, tmp_path, capsys):
        with tmpfs(tmp_path / "disk") as disk:
            read_only(disk)
            assert main(["ingest", str(tiny_cohort / "cohort.toml"), "--out", str(disk)]) == 2
        out = capsys.readouterr().out
        one_line_error(out, f"{disk}: Read-only file system (the file system is read-only")
        assert "kept" not in out

    def test_evaluate_and_predict_with_a_read_only_output_folder(
        self, trained_master, tmp_path, capsys, monkeypatch
    ):
        cohort = trained_master.parents[2]
        with tmpfs(tmp_path / "disk", "64m") as disk:
            run_dir = disk / "run"
            shutil.copytree(trained_master, run_dir)
            before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
            read_only(disk)
            assert main(["evaluate", str(run_dir)]) == 2
            one_line_error(capsys.readouterr().out, "Read-only file system")
            argv = ["predict", str(run_dir / "bundle"), "--images", str(cohort / "dicom")]
            argv += ["--clinical", str(cohort / "clinical.csv"), "--out", str(disk / "out" / "p.csv")]
            assert main(argv) == 2
            out = capsys.readouterr().out
            one_line_error(out, "Read-only file system")
            assert "scored" not in out  # refused before the work, not after scoring every breast
            assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
            argv[-1] = str(tmp_path / "out" / "p.csv")  # written elsewhere, its cache on the read-only disk

            def scan(*args):
                raise AssertionError("the export's headers were read before the cache folder was checked")

            monkeypatch.setattr("mammofuse.deploy.predict.find_images", scan)
            assert main([*argv, "--cache", str(disk / "cache")]) == 2
            one_line_error(capsys.readouterr().out, f"{disk / 'cache'}: Read-only file system")


class TestFullDisk:
    def test_preprocess_on_a_full_disk_stops_before_decoding(self, tiny_cohort, tmp_path, capsys):
        with tmpfs(tmp_path / "disk", "4m") as disk:
            config = str(tiny_cohort / "cohort.toml")
            assert main(["ingest", config, "--out", str(disk)]) == 0
            manifest = (disk / "manifest.csv").read_bytes()
            filler = fill(disk)
            capsys.readouterr()
            assert main(["preprocess", config, "--work", str(disk)]) == 2
            one_line_error(capsys.readouterr().out, "No space left on device (the disk is full")
            assert (disk / "manifest.csv").read_bytes() == manifest
            filler.unlink()
            assert main(["preprocess", config, "--work", str(disk)]) == 0

    def test_a_disk_that_fills_during_preprocess(self, tiny_cohort, tmp_path, capsys):
        """Room for the start-up check but not for the cache: one line, exit 2; once there is room, the
        rerun cleans what the failed one left and gives what a run on a roomy disk gives."""
        edit_config(tiny_cohort, preprocess={"size": [384, 192]})  # a cache of 4 MB: more than the check
        config = str(tiny_cohort / "cohort.toml")
        assert main(["ingest", config]) == 0
        assert main(["preprocess", config]) == 0
        cache_columns = ["cc_cache", "mlo_cache"]
        expected = pd.read_csv(tiny_cohort / "work" / "preprocessed.csv").drop(columns=cache_columns)
        with tmpfs(tmp_path / "disk", "8m") as disk:
            assert main(["ingest", config, "--out", str(disk)]) == 0
            filler = fill(disk, leave=2 << 20)  # the check passes, the cache fills it
            capsys.readouterr()
            assert main(["preprocess", config, "--work", str(disk), "--workers", "1"]) == 2
            out = capsys.readouterr().out
            one_line_error(out, "No space left on device (the disk is full")
            assert f"error: {disk / 'cache'}" in out  # where (a write's error names no file)
            filler.unlink()
            assert main(["preprocess", config, "--work", str(disk), "--workers", "1"]) == 0
            assert not [p for p in (disk / "cache").rglob("*") if ".tmp" in p.name]
            got = pd.read_csv(disk / "preprocessed.csv").drop(columns=cache_columns)
        pd.testing.assert_frame_equal(got, expected)

    def test_a_disk_that_fills_during_training_keeps_the_last_good_epoch(self, ready, tmp_path):
        from lightning.pytorch.callbacks import Callback

        from mammofuse.presets import apply_preset
        from mammofuse.training.run import train

        class FillTheDisk(Callback):
            def on_train_epoch_start(self, trainer, module):
                if trainer.current_epoch == 1:
                    self.filler = fill(disk)

        with tmpfs(tmp_path / "disk", "64m") as disk:
            shutil.copytree(ready, disk / "cohort", ignore=shutil.ignore_patterns("runs"))
            cfg = apply_preset(load_config(disk / "cohort" / "cohort.toml"), str(ready.parent / "fast.toml"))
            cfg.train.epochs = 3
            run_dir = disk / "cohort" / "work" / "runs" / "full"
            filling = FillTheDisk()
            try:
                train(cfg, run_dir, callbacks=[filling])
                raise AssertionError("the full disk went unnoticed")
            except OSError as exc:
                assert "the disk is full" in disk_error(exc)
            last = run_dir / "checkpoints" / "last.ckpt"
            assert torch.load(last, weights_only=True)["epoch"] == 0  # the first epoch, whole
            assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist()[0] == 1  # whole, if ahead
            filling.filler.unlink()
            train(cfg, run_dir)
            assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist() == [1, 2, 3]
            assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]

import argparse

import pytest

from mammofuse.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


class TestHelp:
    @pytest.mark.parametrize("name", sorted(_subcommands(build_parser())))
    def test_every_command_says_what_it_does_beyond_its_one_line_summary(self, name, capsys):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = "".join(capsys.readouterr().out.split())  # wrapped at spaces and after hyphens
        description = _subcommands(build_parser())[name].description
        assert description and "".join(description.split()) in text
        assert "%%" not in text  # a description is not %-formatted: "95 %%" would print as it is

    @pytest.mark.parametrize(
        ("argv", "usage"),
        [
            (["evaluate", "run", "--force"], "mammofuse evaluate"),
            (["bundle", "verify", "b", "--x"], "mammofuse bundle verify"),
        ],
    )
    def test_an_option_the_command_does_not_take_is_shown_with_that_commands_usage(self, argv, usage, capsys):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2
        assert err.startswith(f"usage: {usage} [-h]")  # argparse alone: "usage: mammofuse [-h] [--version]"
        assert f"error: unrecognized arguments: {argv[-1]}" in err


class TestDiskErrors:
    def test_a_full_disk_is_one_line_naming_the_file_and_exit_2(self, tiny_cohort, monkeypatch, capsys):
        import errno

        from mammofuse.problems import Problems

        def full(self, path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(Problems, "write_csv", full)
        assert main(["ingest", str(tiny_cohort / "cohort.toml")]) == 2
        out = capsys.readouterr().out
        assert "exclusions.csv: No space left on device (the disk is full" in out and "Traceback" not in out


class TestStoppedOrDamagedFiles:
    """A stage's files are written whole or not at all; one damaged since is named, never a traceback."""

    def test_a_stage_stopped_while_it_writes_its_table_leaves_the_previous_one_whole(
        self, tiny_cohort, monkeypatch, capsys
    ):
        import pandas as pd

        config = str(tiny_cohort / "cohort.toml")
        assert main(["ingest", config]) == 0
        work = tiny_cohort / "work"
        before = (work / "manifest.csv").read_bytes()
        to_csv = pd.DataFrame.to_csv

        def stopped_halfway(self, path, *args, **kwargs):  # Ctrl-C (or a kill) in the middle of the write
            text = to_csv(self, None, *args, **kwargs)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text[: len(text) // 2])
            raise KeyboardInterrupt

        monkeypatch.setattr(pd.DataFrame, "to_csv", stopped_halfway)
        assert main(["ingest", config]) == 130
        monkeypatch.undo()
        assert (work / "manifest.csv").read_bytes() == before  # not a manifest cut at half its breasts
        assert not [p for p in work.iterdir() if ".tmp" in p.name]

    def test_what_a_killed_writer_left_is_removed_at_the_next_write(self, tmp_path):
        """A kill (SIGKILL, a power cut) in the middle of a write leaves its hidden temporary file; the next
        write of that file removes it, unless its writer may still be writing: alive here, or (another
        machine's, on shared storage) written within the hour."""
        import os
        import time

        import pandas as pd

        from mammofuse.storage import LEFTOVER_AGE, alive, write_table

        dead = next(pid for pid in range(4_000_000, 4_100_000) if not alive(pid))
        table = tmp_path / "manifest.csv"
        old = time.time() - LEFTOVER_AGE - 60
        left = {
            "dead, old": (tmp_path / f".manifest.csv.{dead}.tmp", old),
            "dead, recent": (tmp_path / f".manifest.csv.{dead + 1}.tmp", time.time()),
            "alive, old": (tmp_path / f".manifest.csv.{os.getppid()}.tmp", old),
            "another file's": (tmp_path / f".labels.csv.{dead}.tmp", old),
        }
        for path, when in left.values():
            path.write_text("patient_id,si")
            os.utime(path, (when, when))
        write_table(pd.DataFrame({"patient_id": ["P1"], "side": ["L"]}), table)
        assert pd.read_csv(table).shape == (1, 2)
        assert {name for name, (path, _) in left.items() if path.exists()} == {
            "dead, recent",
            "alive, old",
            "another file's",
        }

    def test_a_damaged_checkpoint_predictions_or_checks_file_of_a_run_is_named(
        self, trained_master, tmp_path, capsys
    ):
        import shutil

        run_dir = tmp_path / "run"
        shutil.copytree(trained_master, run_dir)
        assert main(["explain", str(run_dir), "--n", "1", "--cascade", "0"]) == 0
        damaged = {
            "checkpoints/best.ckpt": (
                "evaluate",
                "cannot be loaded as the checkpoint `mammofuse train` wrote",
            ),
            "predictions.csv": ("report", "not as `mammofuse evaluate"),
            "explain/checks.json": ("report", "not as `mammofuse explain"),
        }
        for name, (command, said) in damaged.items():
            path = run_dir / name
            whole = path.read_bytes()
            cut = whole[: len(whole) // 3]  # cut short by another tool or a disk; a table: overwritten
            path.write_bytes(cut if name != "predictions.csv" else b"<html>\n")
            capsys.readouterr()
            assert main([command, str(run_dir)]) == 2, name
            out = " ".join(capsys.readouterr().out.split())
            assert f"{path}: {said}" in out and "Traceback" not in out
            path.write_bytes(whole)
        assert main(["report", str(run_dir)]) == 0

    def test_a_damaged_work_file_or_cache_index_is_named(self, tiny_cohort, capsys):
        config = str(tiny_cohort / "cohort.toml")
        assert main(["ingest", config]) == 0
        assert main(["preprocess", config]) == 0
        work = tiny_cohort / "work"
        [index] = (work / "cache").glob("*/index.json")
        index.write_text('{"entries": {', encoding="utf-8")  # edited, or cut short by another tool
        capsys.readouterr()
        assert main(["preprocess", config]) == 0  # the cache is derived: made again, and said
        out = " ".join(capsys.readouterr().out.split())
        assert f"{index}: cannot be read (JSONDecodeError" in out and "every image is decoded again" in out
        assert main(["preprocess", config]) == 0
        assert "0 decoded" in capsys.readouterr().out  # the rebuilt index serves the next run
        (work / "manifest.csv").write_text("<html>not a table</html>\n", encoding="utf-8")
        assert main(["preprocess", config]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert (
            "manifest.csv: not as `mammofuse ingest` writes it (no column patient_id, side); run it again"
            in out
        )
        assert "Traceback" not in out

    def test_train_before_split_is_one_line_and_makes_no_run_folder(self, tiny_cohort, capsys):
        config = str(tiny_cohort / "cohort.toml")
        assert main(["ingest", config]) == 0 and main(["preprocess", config]) == 0
        capsys.readouterr()
        assert main(["train", config, "--preset", "demo_cpu"]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert out == f"error: {tiny_cohort / 'work' / 'splits.csv'}: not found; run `mammofuse split` first"
        assert not (tiny_cohort / "work" / "runs" / "demo_cpu").exists()  # no empty run to list

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

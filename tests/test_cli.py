from mammofuse.cli import main


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

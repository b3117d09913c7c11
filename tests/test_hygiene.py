"""The test suite's own hygiene: large temp files do not outlive their test (conftest.remove_large_temp_files).
The two tests run in file order: the first leaves a large and a small file, the second looks for them."""
import pytest

from conftest import LARGE_FILE_BYTES

LEFT_BEHIND = []


def test_writes_a_large_and_a_small_temp_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ckpt.pt").write_bytes(b"0" * (LARGE_FILE_BYTES + 1))
    (tmp_path / "run" / "log.jsonl").write_text("{}\n")
    LEFT_BEHIND.append(tmp_path / "run")


def test_the_large_file_is_gone_after_its_test():
    if not LEFT_BEHIND:
        pytest.skip("runs after test_writes_a_large_and_a_small_temp_file")
    assert not (LEFT_BEHIND[0] / "ckpt.pt").exists() and (LEFT_BEHIND[0] / "log.jsonl").exists()

"""README's "Bring your own data" and "Bring your own task": the three code blocks run as
written, from a folder outside the repository, and give the accuracy the README states."""

import re
import subprocess
import sys

import pytest

from conftest import REPO, cli_env, stderr_tail

BLOCK = re.compile(r"```python\n(# (my_data\.py|my_task\.py|notebook)\n.*?)```", re.S)


def readme_blocks() -> dict[str, str]:
    return {name: code for code, name in BLOCK.findall((REPO / "README.md").read_text())}


def test_the_readme_has_the_three_blocks():
    assert set(readme_blocks()) == {"my_data.py", "my_task.py", "notebook"}


@pytest.mark.slow
def test_bring_your_own_data_and_task_from_the_readme(tmp_path):
    blocks = readme_blocks()
    for name in ("my_data.py", "my_task.py"):
        (tmp_path / name).write_text(blocks[name])
    (tmp_path / "notebook.py").write_text(blocks["notebook"])
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    # One CPU device, as the README measured (a notebook's default), not the suite's 4.
    env["XLA_FLAGS"] = " ".join(flag for flag in env.get("XLA_FLAGS", "").split()
                                if "force_host_platform_device_count" not in flag)
    result = subprocess.run([sys.executable, "notebook.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, stderr_tail(result.stderr)
    printed = [float(line) for line in result.stdout.split()]
    assert printed[0] == printed[1]  # the loaded best checkpoint is the one train reported
    # The stated figure to one flower: float32 rounding differs between CPUs (the README's
    # machine gave 29 of 30, an AVX-512 VM 28 of 30 with the same code), and 480 steps carry
    # it into which checkpoint wins on validation.
    stated = re.search(r"# (0\.\d+) \(29 of 30 flowers\)", blocks["notebook"]).group(1)
    assert printed[0] == pytest.approx(float(stated), abs=1 / 30 + 1e-4)
    assert round(printed[0] * 30, 6).is_integer()  # a share of the 30 test flowers

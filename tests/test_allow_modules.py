"""`--allow-module` / FLOWRUN_ALLOW_MODULES: a blueprint may only name code under the allowed
prefixes, checked before any module is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def flowrun(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "FLOWRUN_ALLOW_MODULES"}
    full.update(env or {})
    cmd = [sys.executable, "-m", "flowrun", *args]
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


def write(tmp_path: Path) -> Path:
    marker = tmp_path / "imported"
    (tmp_path / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef f(x=None):\n    return 1\n"
    )
    (tmp_path / "good.py").write_text("def g(x=None):\n    return 2\n")
    path = tmp_path / "bp.yaml"
    path.write_text("nodes:\n  - id: a\n    uses: good.g\n  - id: b\n    uses: evil.f\n")
    return path


def test_a_module_outside_the_allowed_ones_is_refused_before_any_import(tmp_path: Path) -> None:
    path = write(tmp_path)
    for args in (["validate", str(path)], ["run", str(path), "--state-dir", "st"]):
        done = flowrun(*args, "--allow-module", "good", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        text = done.stdout + done.stderr
        assert "bp.yaml:5:11: 'evil.f' is outside the allowed modules (good)" in text
        assert "good.g" not in text
        assert not (tmp_path / "imported").exists()  # the module never ran
    assert not (tmp_path / "st").exists()  # and no run was created


def test_the_environment_sets_the_default_and_an_allowed_blueprint_runs(tmp_path: Path) -> None:
    path = write(tmp_path)
    env = {"FLOWRUN_ALLOW_MODULES": "good, other"}
    done = flowrun("validate", str(path), cwd=tmp_path, env=env)
    assert done.returncode == 2 and "'evil.f' is outside" in done.stdout
    done = flowrun("validate", str(path), "--allow-module", "good", "--allow-module", "evil",
                   cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert (tmp_path / "imported").exists()  # allowed: imported as usual

"""Documentation that must not drift from the code."""

from __future__ import annotations

import subprocess
import sys

from tests.support.env import ROOT


def test_the_configuration_reference_lists_every_setting_as_the_code_defines_it():
    result = subprocess.run(
        [sys.executable, "scripts/gen_config_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

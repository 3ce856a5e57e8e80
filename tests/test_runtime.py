"""changekit.runtime: the allocator tuning applied on import, and its opt-out."""

import os
import subprocess
import sys

import pytest

CHECK = "import changekit.runtime as r, changekit; print(r._tuned)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_allocator_is_tuned_on_import_unless_opted_out():
    env = {k: v for k, v in os.environ.items() if k != "CHANGEKIT_MALLOC"}
    on = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True)
    off = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         env={**env, "CHANGEKIT_MALLOC": "system"}, check=True)
    import platform

    assert on.stdout.strip() == ("True" if platform.libc_ver()[0] == "glibc" else "False")
    assert off.stdout.strip() == "False"

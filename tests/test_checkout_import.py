"""Python started in a source checkout imports `nas` from the checkout, layers included.

The layer packages live in top-level folders that pyproject maps into `nas` at install
time; run from the checkout's root, Python finds the bare `nas/` folder first. This must
work without any installed copy of the project to fall back on (a wheel installed
elsewhere, or none at all), so the test hides the editable install's finder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HIDE_INSTALLED_COPY = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
"""


def test_every_layer_imports_from_the_checkout_root():
    code = HIDE_INSTALLED_COPY + (
        "import nas, nas.search_space, nas.kernels, nas.supernet, nas.search\n"
        "for m in (nas, nas.search_space, nas.kernels, nas.supernet, nas.search):\n"
        "    print(m.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    files = [Path(line) for line in out.stdout.split()]
    expected = ["nas", "search_space", "kernels", "supernet", "search"]
    assert [f.parent for f in files] == [ROOT / name for name in expected]

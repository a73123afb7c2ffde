"""`kdsae --help` starts fast: building the whole parser (every verb's options) loads none of the heavy libraries;
each verb imports them when it runs."""

import json
import subprocess
import sys

HEAVY = ("torch", "pandas", "matplotlib", "transformer_lens")


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import json, sys\n"
        "from kdsae_core.cli.main import build_parser\n"
        "build_parser()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [], f"building the kdsae parser imported {json.loads(out)}"

"""Where every command prints: results on stdout, errors on stderr, `--json` documents.

Emoji codes are off: Rich would turn text such as `b':x:0'` in an error message (bytes of
a file, a user's path) into an emoji and change what the user sees.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def print_json(obj: Any) -> None:
    """`--json` output: indented, keys sorted, straight to stdout (no Rich markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

"""The two consoles every command prints to: results on stdout, errors on stderr.

Emoji codes are off: Rich would turn text such as `b':x:0'` in an error message (bytes of
a file, a user's path) into an emoji and change what the user sees.
"""

from __future__ import annotations

from rich.console import Console

out = Console(emoji=False)
err = Console(stderr=True, emoji=False)

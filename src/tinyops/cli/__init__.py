"""The `tinyops` command: thin glue over the domain packages, Rich output, exit codes."""

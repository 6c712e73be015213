"""`python -m integrations` is the `deskbridge` command."""

from integrations.cli import main

main()

"""``python -m flowkit`` runs the CLI."""

from flowkit.cli import main

main()

"""``python -m itransfer`` runs the CLI."""

from itransfer.cli import main

main()

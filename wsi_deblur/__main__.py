"""``python -m wsi_deblur`` runs the command-line interface."""

from .cli import main

main()

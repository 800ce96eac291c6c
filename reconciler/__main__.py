"""``python -m reconciler`` runs the ``reconcile`` command."""

from reconciler.cli import main


main()

"""``python -m verger``: the same as the ``verger`` command."""

from verger.cli.main import main

main()

"""``python -m verger``: the same as the ``verger`` command."""

from verger.cli.entry import main

main()

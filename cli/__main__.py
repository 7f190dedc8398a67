"""``python -m sasfleet.cli``: the ``sasfleet`` command."""

from sasfleet.cli.main import main

main()

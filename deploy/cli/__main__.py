"""``python -m deploy.cli``: the ``citadel`` command, for a checkout without the console script."""

from deploy.cli import main

main()

"""``python -m modelreasoner.server``: the reference model server's command line (cli.py)."""

from modelreasoner.server.cli import main

if __name__ == "__main__":
    main()

"""``python -m client.edge``: the edge runtime's command line."""

from client.edge.cli import main

raise SystemExit(main())

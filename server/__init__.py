"""Server side of FREE-Fed: ServerApp, model pool, FREE training loop, reporting, hub."""

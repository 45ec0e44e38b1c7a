"""`actord run`: the main loop, the app seam, config, metrics, sdnotify, health, the CLI."""

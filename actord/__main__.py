"""`python -m actord`: the same as the `actord` command."""

from .daemon.cli import actord_main

raise SystemExit(actord_main())

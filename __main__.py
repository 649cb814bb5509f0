"""`python -m orchestry` is the same as the `orchestry` command."""

from orchestry.cli.main import main

raise SystemExit(main())

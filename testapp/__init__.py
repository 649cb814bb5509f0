"""orchestry-testapp: the tiny busybox HTTP image the tests run (see build.py)."""

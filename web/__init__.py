"""The HTTP API (Flask): it validates, writes desired state and enqueues work; it never talks to Docker."""

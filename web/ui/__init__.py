"""The web dashboard under /ui/: server-rendered pages (Jinja2), one small script and one stylesheet shipped in
the package (no CDN, no build step), live by short polling of HTML fragments (no request thread is held).

Every figure comes from the functions the API's views use (web/apps.py, web/app_metrics.py, web/health.py,
web/scaling.py, web/cluster.py, models/jobs.py, models/events.py), and every action enqueues its job through
web/operations.py, so the dashboard shows and does exactly what the API does.
"""

from orchestry.web.ui.views import bp

__all__ = ["bp"]

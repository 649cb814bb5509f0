"""`--log-format json`: every line the controller writes is one JSON object with its fields."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from orchestry.config.logs import JsonFormatter, TextFormatter

from conftest import hello, post, start_server, stop_server


def test_formatters_carry_the_fields() -> None:
    record = logging.LogRecord("orchestry.jobs", logging.INFO, __file__, 1, "job succeeded", (), None)
    record.job_id, record.app = 7, "web"
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["msg"], entry["job_id"], entry["app"], entry["level"]) == ("job succeeded", 7, "web", "info")
    assert TextFormatter().format(record).endswith("job succeeded job_id=7 app=web")


def test_serve_writes_json_lines(db_url: str, tmp_path: Path) -> None:
    server = start_server(db_url, tmp_path, extra_env={"ORCHESTRY_LOG_FORMAT": "json", "ORCHESTRY_NGINX": "off"})
    try:
        post(server, hello("logged"))
    finally:
        stop_server(server)
    lines = [line for line in server.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert any(e["msg"] == "orchestry listening" and "node" in e for e in entries)
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)

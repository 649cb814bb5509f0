"""Where Orchestry touches container engines. Only `docker_engine` imports the Docker SDK."""

"""The application layer: API functions, jobs, CLI, web UI, asset downloads."""

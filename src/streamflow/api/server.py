"""`streamflow serve` / `make serve`: run the feature API with uvicorn.

Defaults: API_HOST or 127.0.0.1, API_PORT or 8000, API_WORKERS or 1 (see
:class:`streamflow.api.service.ApiConfig` for the other API_* variables).
"""

from __future__ import annotations

import logging

from streamflow.api.service import ApiConfig
from streamflow.settings import Settings


def serve(settings: Settings, config: ApiConfig) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = dict(host=config.host, port=config.port, loop="uvloop", http="httptools",
                   access_log=config.access_log, timeout_graceful_shutdown=5, log_level="info")
    db = f"{settings.host}:{settings.port}/{settings.database}"
    print(f"Serving online features on http://{config.host}:{config.port} "
          f"(docs: /docs, workers: {config.workers}, db: {db})", flush=True)
    if config.workers > 1:
        # Each worker process builds its own app from the environment.
        settings.export_env()
        import os

        os.environ.update({"API_HOST": config.host, "API_PORT": str(config.port)})
        uvicorn.run("streamflow.api.app:app_from_env", factory=True, workers=config.workers, **options)
    else:
        from streamflow.api.app import create_app

        uvicorn.run(create_app(settings, config), **options)

"""The online feature API: FastAPI over Feast's PostgreSQL online store.

`streamflow.api.server.serve` runs it (``make serve``); ``streamflow.api.app.create_app``
builds the application; ``streamflow.api.service.OnlineService`` holds the connection
pool, the registry catalog and the read path.
"""

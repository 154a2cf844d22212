"""The operations console the gateway serves at ``/``: a single page with its assets in the
package (``static/``: no CDN, installable, offline shell), fed by JSON and server-sent events
that the gateway aggregates from the services' ``/health`` and ``/metrics`` (``live``), behind
a login (``auth``), with validations started from it (``runner``); ``app`` puts the routes on
the gateway's FastAPI app."""

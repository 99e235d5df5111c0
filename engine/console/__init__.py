"""The admin web console: static files (``static/``) the engine serves at ``/``, the resource
serving them (:mod:`engine.console.resource`) and the build step that vendors xterm.js from
the npm registry (:mod:`engine.console.vendor`)."""

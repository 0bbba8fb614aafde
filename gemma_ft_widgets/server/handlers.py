"""Routes under {base_url}gemma-ft/api/ (JSON; Jupyter's authentication and authorization on
every one; POST needs the XSRF token like every Jupyter API):

    GET  workspaces                              each workspace with its current run + notice
    GET  workspaces/<i>/runs                     every run of workspace i (RunStatus dicts)
    GET  workspaces/<i>/runs/<name>              a run's status, progress and latest metrics
    POST workspaces/<i>/runs/<name>/stop         {"force": false}: stop that run, if it is active

File reads and process checks run in a worker thread, so a slow disk never blocks the server;
a stop waits there for the run's processes to end.
"""

from __future__ import annotations

import asyncio
import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .. import remedies
from ..runs import RunError
from .workspaces import BadRequest, NotFound, WorkspaceSet

AUTH_RESOURCE = "gemma_ft"


class _Handler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def workspaces(self) -> WorkspaceSet:
        return self.settings["gemma_ft_workspaces"]

    async def answer(self, fn, *args) -> None:
        try:
            result = await asyncio.to_thread(fn, *args)
        except BadRequest as e:
            raise web.HTTPError(400, str(e)) from None
        except NotFound as e:
            raise web.HTTPError(404, str(e)) from None
        except RunError as e:  # refused (e.g. a run on another host): the message says why
            raise web.HTTPError(409, remedies.error_text(e)) from None
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(result, default=str))


class WorkspacesHandler(_Handler):
    """GET workspaces."""

    @web.authenticated
    @authorized
    async def get(self):
        """Each workspace with its current run and notice."""
        await self.answer(lambda: {"workspaces": self.workspaces.states()})


class RunsHandler(_Handler):
    """GET workspaces/<i>/runs."""

    @web.authenticated
    @authorized
    async def get(self, index: str):
        """Every run of workspace `index` (404 for an unknown one)."""
        await self.answer(lambda: {"runs": self.workspaces.runs(index)})


class RunHandler(_Handler):
    """GET workspaces/<i>/runs/<name>."""

    @web.authenticated
    @authorized
    async def get(self, index: str, name: str):
        """A run's status, summary, latest metrics and notice."""
        await self.answer(self.workspaces.run, index, name)


class StopHandler(_Handler):
    """POST workspaces/<i>/runs/<name>/stop."""

    @web.authenticated
    @authorized
    async def post(self, index: str, name: str):
        """Stop the run if it is the active one; 400 for a body that is not {"force": bool}."""
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON, e.g. {\"force\": false}") from None
        force = body.get("force", False) if isinstance(body, dict) else None
        if not isinstance(force, bool):
            raise web.HTTPError(400, "force must be true or false")
        await self.answer(self.workspaces.stop, index, name, force)


def register(web_app, workspaces: WorkspaceSet) -> None:
    """Add the API routes (see the module docstring) to the Jupyter server's web app."""
    web_app.settings["gemma_ft_workspaces"] = workspaces
    api = url_path_join(web_app.settings.get("base_url", "/"), "gemma-ft", "api")
    web_app.add_handlers(".*$", [
        (url_path_join(api, "workspaces"), WorkspacesHandler),
        (url_path_join(api, r"workspaces/(\d+)/runs"), RunsHandler),
        (url_path_join(api, r"workspaces/(\d+)/runs/([^/]+)"), RunHandler),
        (url_path_join(api, r"workspaces/(\d+)/runs/([^/]+)/stop"), StopHandler),
    ])

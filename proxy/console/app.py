"""The console's router: ``/console/...`` requests of the admin listener, after the login check.

Every page but the login form and the static files needs a session; every POST but the login
needs the session's CSRF token; pages that change state need the admin role. Each state change
writes one ``console_audit`` log line (who, what, on which key).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import structlog

from proxy.console import auth
from proxy.console.auth import Session, Sessions
from proxy.console.history import HistoryWriter
from proxy.console.html import csrf_field, esc, page
from proxy.console.http import SECURITY_HEADERS, Request, Response, redirect
from proxy.console.overview import overview_page, summarise
from proxy.console.pages import filters_from, history_page, tx_page
from proxy.console.statepage import OPERATIONS, Target, apply, confirm_page, lookup, state_page
from proxy.console.trypage import run_try, try_page
from proxy.observability import metrics
from proxy.state.base import StoreError

log = structlog.get_logger("spamgate.console")

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
Handler = Callable[[Request, Session], Awaitable[Response]]


def _static() -> dict[str, bytes]:
    folder = resources.files("proxy.console") / "static"
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith(tuple(STATIC_TYPES))}


class Console:
    """The console of one process; ``runtime.gen`` is the running generation (config, policy)."""

    def __init__(self, runtime: Any, readiness: Callable[[], Awaitable[tuple[bool, list[str]]]]) -> None:
        self.rt = runtime
        self.readiness = readiness
        self.sessions = Sessions()
        self.static = _static()
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/console/"): self.history_page,
            ("GET", "/console/api/history"): self.history_api,
            ("GET", "/console/overview"): self.overview,
            ("GET", "/console/try"): self.try_get,
            ("POST", "/console/try"): self.try_post,
            ("GET", "/console/state"): self.state_get,
            ("POST", "/console/state"): self.state_post,
        }
        self.prefix_routes: list[tuple[str, str, Handler]] = [("GET", "/console/tx/", self.tx_page)]

    @property
    def history(self) -> HistoryWriter | None:
        writer: HistoryWriter | None = self.rt.gen.services.extras.get("history")
        return writer

    @property
    def cfg(self) -> Any:
        return self.rt.gen.config.console

    async def handle(self, req: Request) -> Response:
        resp = await self._dispatch(req)
        resp.headers.update(SECURITY_HEADERS)
        return resp

    async def _dispatch(self, req: Request) -> Response:
        path = req.path
        if path.startswith("/console/static/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.static:
                return Response(404, b"not found\n", "text/plain; charset=utf-8")
            ctype = STATIC_TYPES["." + name.rsplit(".", 1)[1]]
            return Response(200, self.static[name], ctype)
        if path == "/console":
            return redirect("/console/")
        if not self.cfg.enabled:
            return Response(404, b"the console is off (console.enabled)\n", "text/plain; charset=utf-8")
        if path == "/console/login":
            return await self.login(req)
        session = self.sessions.get(req.cookies.get(auth.COOKIE))
        if session is None:
            if req.method == "GET" and not path.startswith("/console/api/"):
                return redirect("/console/login")
            return Response(403, b"log in first\n", "text/plain; charset=utf-8")
        if req.method == "POST" and not auth.csrf_ok(session.csrf, req.form().get("csrf")):
            return Response(403, b"missing or wrong CSRF token\n", "text/plain; charset=utf-8")
        if path == "/console/logout" and req.method == "POST":
            self.sessions.drop(req.cookies.get(auth.COOKIE))
            resp = redirect("/console/login")
            resp.cookies.append(auth.cookie(auth.COOKIE, "", self.cfg, max_age=0))
            return resp
        handler = self.routes.get((req.method, path))
        if handler is None:
            for method, prefix, h in self.prefix_routes:
                if req.method == method and path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            known = {p for _, p in self.routes}
            return Response(405 if path in known else 404, b"not found\n", "text/plain; charset=utf-8")
        return await handler(req, session)

    # -- login -----------------------------------------------------------------------------------

    async def login(self, req: Request) -> Response:
        cfg = self.cfg
        if not (cfg.admin_password_hash or cfg.viewer_password_hash):
            body = (
                "<h1>Console login</h1><p>No login is configured. Make a password hash with "
                "<code>spamgate console-password</code> and set <code>[console] admin_password_hash</code> "
                "(or <code>SPAMGATE__CONSOLE__ADMIN_PASSWORD_HASH</code>), then restart.</p>"
            )
            return Response(503, page("login", body, None))
        error = ""
        if req.method == "POST":
            form = req.form()
            if not auth.csrf_ok(req.cookies.get(auth.PRE_COOKIE, ""), form.get("csrf")):
                error = "The form expired; try again."
            else:
                role = await self.sessions.login(cfg, form.get("password", ""))
                if role:
                    sid, _ = self.sessions.create(role, cfg.session_ttl)
                    log.info("console_login", role=role, remote=req.remote)
                    resp = redirect("/console/")
                    resp.cookies.append(auth.cookie(auth.COOKIE, sid, cfg, max_age=cfg.session_ttl))
                    resp.cookies.append(auth.cookie(auth.PRE_COOKIE, "", cfg, max_age=0))
                    return resp
                log.warning("console_login_failed", remote=req.remote)
                error = "Wrong password."
        token = auth.new_token()
        body = (
            "<h1>Console login</h1>"
            + (f'<p class="error">{esc(error)}</p>' if error else "")
            + '<form method="post" action="/console/login" class="login">'
            + f'<input type="hidden" name="csrf" value="{token}">'
            + '<label>password <input type="password" name="password" id="password" autofocus></label>'
            + '<button type="submit">log in</button></form>'
        )
        resp = Response(403 if error else 200, page("login", body, None))
        resp.cookies.append(auth.cookie(auth.PRE_COOKIE, token, cfg, max_age=600))
        return resp

    # -- history -------------------------------------------------------------------------------------

    def _backend(self) -> Any:
        if self.history is None:
            raise LookupError("no history")
        return self.history.backend

    async def history_page(self, req: Request, session: Session) -> Response:
        if self.history is None:
            return Response(503, page("history", "<p>The history is off.</p>", session))
        f = filters_from(req.query)
        rows = await self._backend().query(f, limit=100)
        return Response(200, history_page(rows, f, session, self._backend().name))

    async def history_api(self, req: Request, session: Session) -> Response:
        if self.history is None:
            return Response(503, b"[]", "application/json")
        try:
            after = int(req.query.get("after", "0"))
        except ValueError:
            after = 0
        rows = await self._backend().query(filters_from(req.query), after=after, limit=100)
        return Response(200, json.dumps(rows).encode(), "application/json")

    async def overview(self, req: Request, session: Session) -> Response:
        now = time.time()
        rows = await self._backend().recent(now - 3600, self.cfg.history_max_rows)
        lists, counters = await asyncio.get_running_loop().run_in_executor(None, _metric_state)
        _, report = await self.readiness()
        body = overview_page(summarise(rows, now), lists, report, counters, session)
        return Response(200, body)

    async def try_get(self, req: Request, session: Session) -> Response:
        return Response(200, try_page(session))

    async def try_post(self, req: Request, session: Session) -> Response:
        if not session.admin:
            return Response(403, try_page(session))
        form = req.form()
        result = await run_try(self.rt.gen, form)
        log.info(
            "console_audit", role=session.role, remote=req.remote, operation="try", ip=form.get("ip", "")
        )
        return Response(200, try_page(session, form, result))

    async def state_get(self, req: Request, session: Session) -> Response:
        gen = self.rt.gen
        t = Target(gen.config, req.query)
        try:
            found = await lookup(gen.services.store, gen.config, t) if not t.error else {}
        except StoreError as exc:
            return Response(503, page("state", f'<p class="error">store error: {esc(exc)}</p>', session))
        return Response(200, state_page(session, t, found, req.query.get("done", "")[:300]))

    async def state_post(self, req: Request, session: Session) -> Response:
        if not session.admin:
            return Response(403, b"admin role needed\n", "text/plain; charset=utf-8")
        gen = self.rt.gen
        form = req.form()
        t = Target(gen.config, form)
        op = form.get("op", "")
        needs = "sender" if op in ("clear_allow_dom", "clear_grey_sender") else "ip"
        if op not in OPERATIONS or t.error or not getattr(t, needs):
            return Response(400, b"bad request\n", "text/plain; charset=utf-8")
        if form.get("confirm") != "yes":
            return Response(200, confirm_page(session, t, op))
        try:
            n = await apply(gen.services.store, gen.config, t, op)
        except StoreError as exc:
            return Response(503, page("state", f'<p class="error">store error: {esc(exc)}</p>', session))
        log.info(
            "console_audit",
            role=session.role,
            remote=req.remote,
            operation=op,
            ip=t.ip or None,
            sender=t.sender or None,
            keys=n,
        )
        done = urllib.parse.urlencode({"done": f"done: {t.describe(op)}"})
        return redirect(f"/console/state?{t.query()}&{done}")

    async def tx_page(self, req: Request, session: Session) -> Response:
        ref = req.path[len("/console/tx/") :]
        row = await self._backend().get(ref) if self.history is not None else None
        if row is None:
            body = f"<h1>Transaction {esc(ref)}</h1><p>Not in the history (too old, or no such ref).</p>"
            return Response(404, page("not found", body, session))
        return Response(200, tx_page(row, self.rt.gen.policy.rules, session))


def _metric_state() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    lists, counters = [], []
    for name, labels, value in metrics.read_samples(
        ("spamgate_list_healthy", "spamgate_store_errors_total", "spamgate_downstream_errors_total")
    ):
        if name == "spamgate_list_healthy":
            lists.append((labels.get("zone", ""), value))
        elif value:
            counters.append(
                (name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}", value)
            )
    return sorted(lists), sorted(counters)


__all__ = ["Console", "csrf_field"]

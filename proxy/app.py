"""Assembles a :class:`~proxy.session.runtime.Generation` from a configuration.

Everything that can fail on bad input (rules, list files, certificates) is loaded here,
before anything is swapped in, so ``check-config``, start-up and reload share one path.
"""

from __future__ import annotations

import asyncio
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from proxy.auth import pools as auth_pools
from proxy.checks.base import Services
from proxy.checks.registry import all_symbol_defs
from proxy.config.schema import Config
from proxy.console.history import acquire_history, release_history
from proxy.dns import build_resolver
from proxy.observability import metrics
from proxy.policy.domains import DomainPolicies
from proxy.policy.engine import Policy
from proxy.policy.rules import Rules, bundled_rules_dir, load_rules
from proxy.session.pipeline import Pipeline
from proxy.session.runtime import Generation, build_tls_context
from proxy.sharing.service import SharingService
from proxy.state import acquire_store, release_store
from proxy.state.pass_cache import StorePassCache
from proxy.state.tables import Tables

RULE_SUFFIXES = (".toml", ".yaml", ".yml")
_executor: ThreadPoolExecutor | None = None


def rule_files(config: Config) -> list[Path]:
    folder = Path(config.policy.rules_dir) if config.policy.rules_dir else bundled_rules_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"rules folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix in RULE_SUFFIXES)
    return files + [Path(p) for p in config.policy.site_rules]


def load_policy_rules(config: Config) -> Rules:
    return load_rules(rule_files(config), all_symbol_defs())


def executor(max_workers: int = 8) -> ThreadPoolExecutor:
    """The bounded thread pool for other synchronous work (``services.run_blocking``). SPF,
    DKIM and ARC do not use it: each has its own pool (:mod:`proxy.auth.pools`), so a sender
    with dead DNS holding SPF threads never delays anyone's DKIM or ARC."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="spamgate-blocking")
    return _executor


async def run_blocking(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(executor(), fn, *args)


def build_services(config: Config) -> Services:
    store = acquire_store(config.store)
    services = Services(
        config=config, resolver=build_resolver(config), run_blocking=run_blocking, store=store
    )
    services.pass_cache = StorePassCache(store)
    t = config.tables
    services.extras["tables"] = Tables(
        t.local_domains_files, t.recipient_files, t.access_files, t.reload_interval, store
    )
    services.readiness["store"] = store.ping
    services.extras["sharing"] = SharingService(services)  # zone file export, /feed
    if metrics.enabled():
        services.on_transaction.append(metrics.on_transaction)
        services.on_close.append(metrics.on_close)
    console = config.console
    if console.enabled and config.metrics.listen:
        writer = acquire_history(
            config.store,
            console.history_max_rows,
            console.history_retention,
            console.history_queue,
            console.history_flush,
        )
        services.extras["history"] = writer
        services.on_transaction.append(writer.on_transaction)
    return services


def build_generation(config: Config, services: Services | None = None) -> Generation:
    rules = load_policy_rules(config)
    policy = Policy(rules, observe=config.server.mode == "observe")
    services = services or build_services(config)
    pipeline = Pipeline(config, services, policy)
    gen = Generation(
        config=config,
        policy=policy,
        pipeline=pipeline,
        services=services,
        tls_context=build_tls_context(config),
        trusted_proxies=[
            ipaddress.ip_network(n, strict=False) for n in config.proxy_protocol.trusted_networks
        ],
        forbidden=frozenset(c.upper() for c in config.smtp.forbidden_commands),
        authserv_id=config.server.authserv_id or config.server.hostname,
        domain_policies=DomainPolicies(config, policy),
    )
    gen.router  # noqa: B018 - routes are checked now (a bad one is a ConfigError on load and reload)
    return gen


async def start_generation(gen: Generation) -> None:
    if gen.services.resolver is not None:
        gen.services.resolver.bind(asyncio.get_running_loop())
    tables = gen.services.extras.get("tables")
    if tables is not None:
        await tables.start(gen.services.run_blocking)
    try:
        await gen.pipeline.start()
    except BaseException:
        if tables is not None:
            await tables.stop()  # a refused reload leaves no watcher behind
        raise
    if "sharing" in gen.services.extras:
        await gen.services.extras["sharing"].start()


async def stop_generation(gen: Generation) -> None:
    if "sharing" in gen.services.extras:
        await gen.services.extras["sharing"].stop()
    await gen.pipeline.stop()
    tables = gen.services.extras.get("tables")
    if tables is not None:
        await tables.stop()
    auth_pools.shutdown(gen.services)  # jobs in flight finish on their own
    if gen.services.resolver is not None:
        await gen.services.resolver.close()
    if gen.services.store is not None:
        await release_store(gen.services.store)
    if "history" in gen.services.extras:
        await release_history(gen.services.extras.pop("history"))
    if gen._router is not None:
        await gen._router.close()

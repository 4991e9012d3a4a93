"""MAIL and RCPT parameters (RFC 1870 SIZE, 6152 BODY, 6531 SMTPUTF8, 3461 DSN).

Each function returns the reply that refuses the command, or None when its parameters are
acceptable. Accepted parameters are passed on to the downstream when it has the extension.
``AUTH=<>`` from relaying MTAs is legal and meaningless here: it is dropped.
"""

from __future__ import annotations

from proxy import replies as R
from proxy.config.schema import Config
from proxy.model import Reply
from proxy.smtp.address import is_xtext

NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def mail_params_problem(params: dict[str, str | None], cfg: Config) -> Reply | None:
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit():
                return R.PARAM_SYNTAX
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                return R.UNKNOWN_PARAM
        elif key == "SMTPUTF8":
            if value is not None:
                return R.PARAM_SYNTAX
            if not cfg.smtp.advertise_smtputf8:
                return R.SMTPUTF8_NOT_OFFERED
        elif key == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):
                return R.PARAM_SYNTAX
        elif key == "ENVID":
            if not value or not is_xtext(value) or len(value) > 100:
                return R.PARAM_SYNTAX
        elif key != "AUTH":
            return R.UNKNOWN_PARAM
    params.pop("AUTH", None)
    return None


def declared_size(params: dict[str, str | None]) -> int:
    value = params.get("SIZE")
    return int(value) if value else 0


def rcpt_params_problem(params: dict[str, str | None]) -> Reply | None:
    for key, value in params.items():
        if key == "NOTIFY":
            items = set((value or "").upper().split(","))
            if not (items == {"NEVER"} or (items and items <= NOTIFY_VALUES)):
                return R.PARAM_SYNTAX
        elif key == "ORCPT":
            if not value or ";" not in value or not is_xtext(value.split(";", 1)[1]):
                return R.PARAM_SYNTAX
        else:
            return R.UNKNOWN_PARAM
    return None

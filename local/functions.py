"""Function folders as the Functions host sees them: function.json metadata, then the loaded entry point."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
from croniter import CroniterBadCronError, croniter

log = logging.getLogger("local.host")


@dataclass(frozen=True)
class FunctionSpec:
    """A queue- or timer-triggered function folder, from its function.json alone (picklable, nothing imported)."""

    name: str
    directory: Path
    module_name: str
    entry_point: str
    parameter: str
    queue_name: str = ""
    connection: str = "AzureWebJobsStorage"
    schedule: str = ""  # a timer trigger's NCRONTAB expression (seconds first); empty for a queue trigger

    @property
    def is_timer(self) -> bool:
        return bool(self.schedule)


@dataclass(frozen=True)
class Entry:
    spec: FunctionSpec
    function: Callable[..., Any]
    wants_context: bool


def resolve_setting_expression(value: str, env: Mapping[str, str]) -> str:
    def lookup(match: re.Match[str]) -> str:
        name = match[1]
        if name not in env or not env[name]:
            raise KeyError(f"binding expression %{name}% names an app setting that is not set")
        return env[name]

    return re.sub(r"%([^%]+)%", lookup, value)


def find_functions(app_root: Path, env: Mapping[str, str], only: set[str] | None = None) -> list[FunctionSpec]:
    """The queue-triggered function folders. A folder the host cannot index (a binding expression naming a
    setting that is not set, a malformed function.json) is logged and left out, as the Functions host does:
    the other functions still run."""
    specs = []
    folders = [path for path in sorted(app_root.glob("*/function.json"))
               if only is None or path.parent.name in only]
    if not folders:
        raise RuntimeError(f"no function folders under {app_root}")
    for config_path in folders:
        try:
            spec = read_function_json(config_path, env)
        except (KeyError, ValueError, OSError) as exc:
            log.error("Error indexing method 'Functions.%s': %s. The function is disabled.",
                      config_path.parent.name, exc.args[0] if isinstance(exc, KeyError) else exc)
            continue
        if spec is not None:
            specs.append(spec)
            if spec.is_timer:
                log.info("Found function %s: timerTrigger on schedule %s", spec.name, spec.schedule)
            else:
                log.info("Found function %s: queueTrigger on %s", spec.name, spec.queue_name)
    return specs


def read_function_json(config_path: Path, env: Mapping[str, str]) -> FunctionSpec | None:
    config = json.loads(config_path.read_text(encoding="utf-8"))
    triggers = [b for b in config.get("bindings", []) if b.get("type") in ("queueTrigger", "timerTrigger")]
    if not triggers:
        log.warning("%s has no queueTrigger or timerTrigger binding; the local host skips it", config_path.parent.name)
        return None
    binding = triggers[0]
    if binding.get("direction") != "in":
        raise ValueError(f"{config_path}: a {binding['type']} binding must have direction 'in'")
    name = config_path.parent.name
    script = config.get("scriptFile", "__init__.py")
    common = {"name": name, "directory": config_path.parent,
              "module_name": name if script == "__init__.py" else f"{name}.{Path(script).stem}",
              "entry_point": config.get("entryPoint", "main"), "parameter": binding["name"]}
    if binding["type"] == "timerTrigger":
        schedule = resolve_setting_expression(binding["schedule"], env)
        next_occurrence(schedule, datetime.now(UTC))  # a schedule the host cannot read disables the function
        return FunctionSpec(**common, schedule=schedule)
    return FunctionSpec(**common, queue_name=resolve_setting_expression(binding["queueName"], env),
                        connection=binding.get("connection") or "AzureWebJobsStorage")


def next_occurrence(schedule: str, after: datetime) -> datetime:
    """The next time an NCRONTAB schedule fires ({second} {minute} {hour} {day} {month} {day-of-week}, UTC)."""
    if len(schedule.split()) != 6:
        raise ValueError(f"timer schedule {schedule!r} is not an NCRONTAB expression of 6 fields")
    try:
        return croniter(schedule, after, second_at_beginning=True).get_next(datetime)
    except (CroniterBadCronError, ValueError) as exc:
        raise ValueError(f"timer schedule {schedule!r} is not valid: {exc}") from exc


def load_entries(app_root: Path, specs: list[FunctionSpec]) -> tuple[dict[str, Entry], dict[str, str]]:
    """Import each function's module (fresh) and check its entry point takes the binding's parameter.

    Returns the loaded entries and, per function that failed to load, the error. As on Azure, a function
    that fails to load (an import error, a setting its module checks at import) does not stop the others:
    each of its invocations fails with the load error.
    """
    if str(app_root) not in sys.path:
        sys.path.insert(0, str(app_root))
    entries: dict[str, Entry] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        for loaded in [key for key in sys.modules if key == spec.name or key.startswith(spec.name + ".")]:
            del sys.modules[loaded]
        try:
            module = importlib.import_module(spec.module_name)
            function = getattr(module, spec.entry_point)
            parameters = inspect.signature(function).parameters
            if spec.parameter not in parameters:
                raise ValueError(f"binding name {spec.parameter!r} is not a parameter of {function.__name__}")
        except Exception as exc:
            errors[spec.name] = f"{type(exc).__name__}: {exc}"
            log.error("Function '%s' failed to load: %s", spec.name, errors[spec.name], exc_info=exc)
            continue
        entries[spec.name] = Entry(spec, function, "context" in parameters)
    return entries, errors


class FunctionLoadError(Exception):
    """The invocation of a function that failed to load: every invocation fails with the load error."""


def check_loaded(name: str, load_errors: Mapping[str, str]) -> None:
    if name in load_errors:
        raise FunctionLoadError(f"Function '{name}' failed to load: {load_errors[name]}")


def invoke(entry: Entry, invocation_id: str, message: Mapping[str, Any]) -> None:
    """Call the entry point with an azure.functions QueueMessage built from the message's fields, or a
    TimerRequest for a timer trigger (message: its past_due flag)."""
    argument = (func.timer.TimerRequest(past_due=bool(message.get("past_due"))) if entry.spec.is_timer
                else func.queue.QueueMessage(**message))
    kwargs: dict[str, Any] = {entry.spec.parameter: argument}
    if entry.wants_context:
        kwargs["context"] = SimpleNamespace(
            invocation_id=invocation_id, function_name=entry.spec.name, function_directory=str(entry.spec.directory)
        )
    entry.function(**kwargs)

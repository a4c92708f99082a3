"""User-facing errors: one line that names the key and says how to fix it."""

from __future__ import annotations

import re

from runner.schema import keys_under


class ConfigError(Exception):
    """Bad input. The message is one line: the key, what is wrong, and the fix."""


class CaptureError(Exception):
    """A model could not be captured into a CUDA graph."""


class CompileError(Exception):
    """torch.compile failed for the model."""


_OVERRIDE = re.compile(r"(?:Error merging override|To append to your config use) \+*([\w.]+)=(.*)$", re.MULTILINE)
_FULL_KEY = re.compile(r"^\s*full_key:\s*(\S*)\s*$", re.MULTILINE)
_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^']+)'")
_AVAILABLE = re.compile(r"Available options in '[^']+':\n((?:\t[^\n]*\n?)+)")
_MISSING_HINTS = {
    "model.inputs": "the model's config must name forward's inputs, e.g. `inputs: {x: {shape: [16]}}` in its file "
                    "(one sample's shape; model.batch is added in front)",
    "model.module": "the model's config must name its module, e.g. `module: {_target_: my_models.Net}`",
}
_VALUE_HINTS = (
    ("could not be converted to Integer", "use a whole number"),
    ("could not be converted to Float", "use a number"),
    ("is not a valid bool", "use true or false"),
)


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _nested(path: list[str], value: str) -> str:
    """{y: {shape: [3]}} for the path [y, shape] and the value [3]."""
    for part in reversed(path):
        value = f"{{{part}: {value}}}"
    return value


def condense(exc: BaseException) -> str:
    """One line for an exception raised while Hydra composes or parses the config."""
    if isinstance(exc, ConfigError):
        return str(exc)
    text = str(exc)
    cause = exc.__cause__
    missing = _MISSING_OPTION.search(text)
    if missing:
        group, option = missing.groups()
        available = _AVAILABLE.search(text)
        choices = ", ".join(o.strip() for o in available.group(1).splitlines()) if available else ""
        hint = f"choose one of: {choices}" if choices else "check configs/ for the valid names"
        return f"{group}={option}: no such option in configs/{group}/; {hint}"
    yaml_error = _yaml_error(exc)
    if yaml_error:
        return yaml_error
    composing = _COMPOSING.match(text)
    if composing:  # a config file of the user's (or a preset) holds the bad key or value
        source, cause_type, cause_text = composing.groups()
        said = _condensed(cause_type, cause_text, text)
        return f"{said} (in the config file {source}.yaml)"
    if cause is None and _FULL_KEY.search(text):  # an OmegaConf error raised directly
        cause = exc
    if cause is not None:
        return _condensed(type(cause).__name__, str(cause), text)
    if type(exc).__name__ == "OverrideParseException":
        return f"could not parse the command line: {_first_line(text)} (see `--help` for the syntax)"
    return _first_line(text) or type(exc).__name__


# Hydra's message for an error in a config file it composed: "In 'model/x': ConfigKeyError
# raised while composing config:" and then OmegaConf's message, the cause itself not kept.
_COMPOSING = re.compile(r"In '([^']+)': (\w+) raised while composing config:\n(.*)", re.DOTALL)


def _yaml_error(exc: BaseException) -> str:
    """A YAML syntax error in a config file, as its file, line and problem; "" for others."""
    problem_mark = getattr(exc, "problem_mark", None)
    if type(exc).__module__.split(".")[0] != "yaml" or problem_mark is None:
        return ""
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    where = context_mark or problem_mark
    said = f"{context}: " if context else ""
    said += str(getattr(exc, "problem", None) or "invalid YAML")
    if context_mark is not None and problem_mark.line != context_mark.line:
        said += f" at line {problem_mark.line + 1}"
    return f"{where.name}, line {where.line + 1}: not valid YAML ({said}); fix the file's syntax"


def _condensed(cause_type: str, cause_text: str, text: str) -> str:
    """One line for OmegaConf's error `cause_type` with message `cause_text`, raised while
    Hydra composed the config (whose own message is `text`)."""
    key_match = _FULL_KEY.search(cause_text)
    key = key_match.group(1) if key_match else ""
    reason = _first_line(cause_text)
    given = _OVERRIDE.search(text)
    if given and given.group(1).startswith("model.inputs.") and (
        "not in struct" in reason or "is not a subclass of InputConfig" in reason
    ):  # an input the model's config does not have (OmegaConf cannot add one to the typed map by key)
        where, value = given.groups()
        name = where.split(".")[2]
        if where.count(".") == 2 and not value.lstrip().startswith("{"):  # model.inputs.y=1: an input is a map
            value = "{shape: [...]}"
        add = f"'++model.inputs={_nested(where.split('.')[2:], value)}'"
        if "not in struct" in reason:
            return f"model.inputs.{name}: the model's config has no input named {name}; fix the name, or add it: {add}"
        return f"{where}: a new input cannot be added by its own key; add it to the map: {add}"
    if cause_type in ("ConfigAttributeError", "ConfigKeyError") and "not in" in reason:
        parent = key.rpartition(".")[0]
        valid = keys_under(parent)
        where = f"'{parent}'" if parent else "the top level"
        listed = f"; valid keys in {where}: {', '.join(valid)}" if valid else ""
        if not valid and (parent == "model.module" or parent.startswith("model.module.")):
            # The model's own arguments: the config names some, the constructor takes more.
            given = _OVERRIDE.search(text)
            value = given.group(2) if given and given.group(1) == key else "..."
            listed = (f"; the model's config sets no such argument: fix its name, or add it with "
                      f"+{key}={value} (the constructor then decides)")
        return f"{key}: unknown key{listed}"
    if cause_type == "MissingMandatoryValue" or reason.startswith("Missing mandatory value"):
        return f"{key}: not set; {_MISSING_HINTS.get(key, f'set it in the config file or with {key}=...')}"
    for needle, hint in _VALUE_HINTS:
        if needle in reason:
            return f"{key}: {reason}; {hint}"
    if "is not a ListConfig" in reason:
        given = _OVERRIDE.search(text)
        if not (given and given.group(1) == key):  # set in a config file: its value is not in the message
            return f"{key}: this key takes a list; write its value in brackets, as [...]"
        return f"{key}={given.group(2)}: this key takes a list; write {key}=[{given.group(2)}]"
    if "is not a subclass of InputConfig" in reason:  # as above, the override not found in the text
        return (f"model.inputs.{key}: a new input cannot be added by its own key; add it to the map: "
                f"'++model.inputs={{{key}: {{shape: [...]}}}}'")
    if "Interpolation" in cause_type or "nterpolation" in reason:
        return f"{key}: {reason}; write a plain value or a ${{...}} that exists in the config"
    if key:
        return f"{key}: {reason}"
    return reason

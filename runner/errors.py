"""User-facing errors: one line that names the key and says how to fix it."""

from __future__ import annotations

import re
import sys
from typing import Any, Optional

from runner.schema import default_of, keys_under, type_of


class ConfigError(Exception):
    """Bad input. The message is one line: the key, what is wrong, and the fix."""


class ModelFault(ConfigError):
    """The model's own code failed (a `raise` of its own, a name it does not have), not a
    setting the runner was given: reported apart from bad settings."""


class CaptureError(Exception):
    """A model could not be captured into a CUDA graph."""


class CompileError(Exception):
    """torch.compile failed for the model."""


_OVERRIDE = re.compile(r"(?:Error merging override|To append to your config use) \+*([\w.]+)=(.*)$", re.MULTILINE)
_FULL_KEY = re.compile(r"^[ \t]*full_key:[ \t]*(\S*)[ \t]*$", re.MULTILINE)  # an empty key is not the next line
_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^'/]*)'")  # the group up to the last slash: hydra/launcher
_AVAILABLE_IN = re.compile(r"Available options in '([^']+)'")
_AVAILABLE = re.compile(r"Available options in '[^']+':\n((?:\t[^\n]*\n?)+)")
_MISSING_HINTS = {
    "model.inputs": "the model's config must name forward's inputs, e.g. `inputs: {x: {shape: [16]}}` in its file "
                    "(one sample's shape; model.batch is added in front)",
    "model.module": "the model's config must name its module, e.g. `module: {_target_: my_models.Net}`",
}
_DELETE_HINTS = {
    "model.inputs": "remove one input with ~model.inputs.NAME, add one with '++model.inputs={NAME: {shape: [...]}}'",
    "model.module": "remove one argument with ~model.module.NAME, or change one with model.module.NAME=...",
}
_VALUE_HINTS = (
    ("could not be converted to Integer", "use a whole number"),
    ("could not be converted to Float", "use a number"),
    ("is not a valid bool", "use true or false"),
)


def first_line(text: str, announced: bool = False) -> str:
    """A message's first non-blank line; with `announced`, the next one too when the first only
    announces it ("Validation error for field 'conv_dim':")."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    return f"{lines[0]} {lines[1]}" if announced and lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _nested(path: list[str], value: str) -> str:
    """{y: {shape: [3]}} for the path [y, shape] and the value [3]."""
    for part in reversed(path):
        value = f"{{{part}: {value}}}"
    return value


# Hydra's words for command lines it cannot take, some raised as plain ValueErrors (which read
# as a bug: exit 1 and the traceback hint), each with the fix on the runner's command line.
_USAGE = (
    (re.compile(r"Config group override must be a string or a list\. Got NoneType"),
     "a config group (model, measure, experiment, peer) set to null: name one of its options, or drop the choice "
     "with ~GROUP (experiment is unset by default: leave it out)"),
    (re.compile(r"Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"),
     "-m (--multirun) and --cfg or --info do not go together: drop -m to print the config, or --cfg/--info to run"),
    (re.compile(r"Multiple values for (\w+)\. To override a value use 'override \1: ([^']*)'"),
     r"+\1=\2: a config group is chosen without +: \1=\2"),
    (re.compile(r"force-add of config groups is not supported: '\+\+(\w+)=([^']*)'"),
     r"++\1=\2: a config group is chosen without ++: \1=\2"),
    (re.compile(r"Primary config module '[^']*' not found"),
     "--config-path names a folder inside the runner's package; for a folder of your own use --config-dir DIR "
     "(and --config-name NAME for DIR/NAME.yaml)"),
)


def usage_error(exc: BaseException) -> str:
    """The one line for a command line Hydra cannot take, or "" for other errors."""
    text = str(exc)
    for pattern, said in _USAGE:
        found = pattern.search(text)
        if found:
            return found.expand(said)
    return ""


def condense(exc: BaseException) -> str:
    """One line for an exception raised while Hydra composes or parses the config."""
    if isinstance(exc, ConfigError):
        return str(exc)
    text = str(exc)
    usage = usage_error(exc)
    if usage:
        return usage
    cause = exc.__cause__
    missing = _MISSING_OPTION.search(text)
    if missing:
        group, option = missing.groups()
        available = _AVAILABLE.search(text)
        named = _AVAILABLE_IN.search(text)
        if named and f"{group}/{option}".startswith(f"{named.group(1)}/"):  # Hydra names the group: model=foo/bar is model's
            group, option = named.group(1), f"{group}/{option}"[len(named.group(1)) + 1:]
        choices = ", ".join(o.strip() for o in available.group(1).splitlines()) if available else ""
        hint = f"choose one of: {choices}" if choices else "check configs/ for the valid names"
        if not option:  # group= with nothing after it
            return f"{group}=: no option named; {hint}"
        if group in ("model", "measure", "experiment"):  # the groups users add their own files to
            hint += f", or add your own as DIR/{group}/{option}.yaml with hydra.searchpath=[file://DIR]"
        return f"{group}={option}: no such {group} option; {hint}"
    yaml_error = _yaml_error(exc)
    if yaml_error:
        return yaml_error
    hydra_fix = _hydra_fix(text) if cause is None else ""
    if hydra_fix:
        return hydra_fix
    folder = _folder_error(exc)
    if folder:
        return folder
    composing = _COMPOSING.match(text)
    if composing:  # a config file of the user's (or a preset) holds the bad key or value
        source, cause_type, cause_text = composing.groups()
        said = _condensed(cause_type, cause_text, text, _merging_key(exc))
        group = source.partition("/")[0]
        if said.startswith(f"{group}: unknown key") and group in ("experiment", "peer"):
            # A preset without its package line lands under experiment: instead of the top level.
            return (f"{source}.yaml: a preset sets top-level keys, and lacks `# @package _global_` as its first "
                    "line (its keys landed under " + group + ":); add that line")
        return f"{said} (in the config file {source}.yaml)"
    if cause is None and _FULL_KEY.search(text):  # an OmegaConf error raised directly
        cause = exc
    if cause is not None:
        return _condensed(type(cause).__name__, str(cause), text)
    if type(exc).__name__ == "OverrideParseException":
        return f"could not parse the command line: {first_line(text)} (see `--help` for the syntax)"
    return first_line(text) or type(exc).__name__


# Hydra's errors whose fix is on the lines after the first, which alone was kept.
_AMBIGUOUS = re.compile(r"^Ambiguous value for argument '(.+)'$", re.MULTILINE)
_NEEDS_MULTIRUN = re.compile(r"^Sweep parameters '(.+)' requires --multirun")
_NOT_IN_DEFAULTS = re.compile(r"^(?:In '([^']+)': )?Could not override '([^']+)'\.")
_APPEND_TO_DEFAULTS = re.compile(r"To append to your default list use (\S+)")
_DID_YOU_MEAN = re.compile(r"Did you mean to override (?:one of )?(.+)\?")
_ALREADY_THERE = re.compile(r"^Could not append to config\. An item is already at '([^']+)'")
_WITHOUT_PLUS = re.compile(r"Either remove \+ prefix: '([^']+)'")
_NOTHING_TO_DELETE = re.compile(r"^Could not delete from config\. '([^']+)' does not exist\.")


def _hydra_fix(text: str) -> str:
    """One line, with its fix, for those of Hydra's errors that give the fix on lines of its
    own (so that the first line alone said what was wrong and not what to do); "" for others."""
    sweep = _NEEDS_MULTIRUN.search(text)  # key=range(1,4), key=choice(a,b)
    if sweep:
        return f"{sweep.group(1)}: a sweep; add -m (--multirun) to run one job per value"
    ambiguous = _AMBIGUOUS.search(text)  # key=a,b
    if ambiguous:
        key, _, value = ambiguous.group(1).partition("=")
        said = f"{key}={value}: several values make a sweep; add -m (--multirun) to run one job per value"
        bare = key.lstrip("+~")
        kind = str(type_of(bare))
        if kind.removeprefix("Optional[").removesuffix("]") == "str":  # a string may hold a comma
            return f"{said}, or write one string as {key}='{value}'"
        if kind.startswith("list[") or bare in ("model.batch", "model.seq"):  # lists of bucket sizes
            return f"{said}, or write a list as {key}=[{value}]"
        return said  # a number, a boolean, one of a set of names: one value
    missing = _NOT_IN_DEFAULTS.search(text)
    if missing and ("default list" in text or "defaults list" in text or "Did you mean to override" in text):
        source, key = missing.groups()
        append = _APPEND_TO_DEFAULTS.search(text)
        meant = _DID_YOU_MEAN.search(text)
        said = f"{append.group(1).lstrip('+') if append else key}: {key} is not in the defaults list"
        said += f" (did you mean {meant.group(1)}?)" if meant else ""
        said += ", so it cannot be overridden" + (f"; add it with {append.group(1)}" if append else "")
        return said + (f" (in the config file {source}.yaml)" if source else "")
    nothing = _NOTHING_TO_DELETE.search(text)  # ~load.rate, where the config leaves it unset (null)
    if nothing:
        key = nothing.group(1)
        return f"~{key}: {key} is not set (null, or no such key), so there is nothing to delete; drop ~{key}"
    there = _ALREADY_THERE.search(text)
    if there:
        plain = _WITHOUT_PLUS.search(text)
        given = plain.group(1) if plain else f"{there.group(1)}=..."
        return (f"+{given}: {there.group(1)} is already in the config, so + cannot add it; drop the +: {given} "
                f"(or ++{given} to set it whether or not it is there)")
    return ""


def folder_error(key: str, folder: str, why: str) -> str:
    """The one line for an output folder (hydra.run.dir, hydra.sweep.dir) that cannot be made."""
    return f"{key}={folder}: {why}; name a folder that can be created"


def is_folder_error(exc: BaseException) -> bool:
    """Whether `exc` is Hydra failing to make the run's or the sweep's folder: bad input."""
    return bool(_folder_error(exc))


def _folder_error(exc: BaseException) -> str:
    """An OSError of Hydra's making the run's or the sweep's folder, as the key that names it
    (the command line's folder is checked before Hydra starts, by runner.cli; this is the
    rest: a default, or a folder a config file names); "" for other errors."""
    if not isinstance(exc, OSError) or exc.filename is None:
        return ""
    maker = ""
    tb = exc.__traceback__
    while tb is not None:  # the last of Hydra's frames: the one that made the folder
        package = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if package == "hydra":
            maker = tb.tb_frame.f_code.co_name
        elif package not in ("os", "pathlib", "posixpath", "shutil", "genericpath"):
            maker = ""  # a frame of other code (the job's own: a result that could not be written) after it
        tb = tb.tb_next
    if maker == "run_job":  # a run's folder, or a sweep's job folder (under hydra.sweep.dir)
        key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(sys.argv[1:]) else "hydra.run.dir"
    elif maker == "sweep":
        key = "hydra.sweep.dir"
    else:
        return ""
    from runner.cli import unusable_folder

    folder = str(exc.filename)
    return folder_error(key, folder, unusable_folder(folder) or f"cannot create the folder ({exc.strerror})")


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


def _merging_key(exc: BaseException) -> str:
    """The dotted key OmegaConf was merging when it failed, from the frames of its merge: a
    config file's section given a list or a value fails at the root, its full_key empty."""
    keys: list[str] = []
    seen: set[int] = set()
    error: Optional[BaseException] = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb, here = error.__traceback__, []
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_name == "_map_merge" and "omegaconf" in frame.f_code.co_filename:
                here.append(str(frame.f_locals.get("key", "")))
            tb = tb.tb_next
        keys = max(keys, here, key=len)
        error = error.__cause__ or error.__context__
    return ".".join(keys)


# A section or a map (load, capture, model.inputs, an input, model.module) given a list or a
# plain value: OmegaConf's words name types, not the fix.
_SECTION_GIVEN = re.compile(r"Cannot merge DictConfig with ListConfig|(?:Invalid type assigned|Merge error): \w+ is not a "
                            r"subclass of (?:\w+Config\b|Dict\[)|Cannot assign \w+ to Dict\[")


def _section_given(key: str, value: Optional[str]) -> str:
    """The one line for a section or a map of the schema given `value` (None: from a file)."""
    node = type_of(key)
    if key == "model.module":
        fix = (f"model.module._target_={value}" if value and not value.startswith("[") else
               "model.module._target_=package.Class" if value is not None else
               "module: {_target_: package.Class, argument: value}")
        return f"model.module: the model's _target_ and its arguments, a map, not a value; write {fix}"
    name = key.rpartition(".")[2]
    if isinstance(node, tuple):  # a map of the user's names: model.inputs
        fix = f"'{key}={{x: {{shape: [...]}}}}'" if value is not None else f"{name}: {{x: {{shape: [...]}}}}"
        return (f"{key}: maps each input's name to its settings, not a list or a value; write {fix} (one entry per "
                "forward argument)")
    fields = getattr(node, "__dataclass_fields__", {})
    if not fields:
        return ""
    if key.startswith("model.inputs.") and key.count(".") == 2:  # one input: its shape is what a list meant
        shape = value if value and value.startswith("[") else f"[{value}]" if value and value.isdigit() else "[...]"
        fix = f"{key}.shape={shape}" if value is not None else f"{name}: {{shape: {shape}}}"
        return f"{key}: an input's settings, a map, not a list or a value; write {fix}"
    # load=server: the value of one of its keys (load.scenario), named; a list, its list key
    # (model.sizes.batch=[1,2]: model.sizes.batch.values).
    meant = [name for name in fields if value and value in _choices(type_of(f"{key}.{name}"))]
    if not meant and value and value.startswith("["):
        meant = [name for name in sorted(fields) if str(type_of(f"{key}.{name}")).startswith("list")]
    hint = f"did you mean {key}.{meant[0]}={value}?" if meant else _give_a_value(key, "set one of them")
    return f"{key}: a section of settings ({', '.join(sorted(fields))}), not a list or a value; {hint}"


def _choices(kind: Any) -> list[str]:
    """The values an enum key takes, as written in a config ([] for another type)."""
    members = getattr(kind, "__members__", None)
    return [str(getattr(m, "value", name)) for name, m in members.items()] if members is not None else []


def _condensed(cause_type: str, cause_text: str, text: str, merging: str = "") -> str:
    """One line for OmegaConf's error `cause_type` with message `cause_text`, raised while
    Hydra composed the config (whose own message is `text`); `merging`: the key being merged."""
    key_match = _FULL_KEY.search(cause_text)
    key = (key_match.group(1) if key_match else "") or merging
    reason = first_line(cause_text)
    given = _OVERRIDE.search(text)
    if key and _SECTION_GIVEN.search(reason):
        value = given.group(2) if given and given.group(1).lstrip("+~") == key else None
        said = _section_given(key, value)
        if said:
            return said
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
    if given and given.group(1) == "model.inputs" and "not in struct" in reason and key.count(".") >= 2:
        # model.inputs={src: ...}: `=` merges into the config's inputs, and a new name is not one.
        name, value = key.split(".")[2], given.group(2)
        return (f"model.inputs={value}: the model's config has no input named {name}, and = does not add one; add it "
                f"with '++model.inputs={value}', and drop an input the model does not take with "
                "'~model.inputs.NAME'")
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
    if "is not Optional" in reason:  # key=null
        return f"{key}: null is not allowed; {_give_a_value(key, 'give a value')}"
    if "does not support deletion" in reason:  # ~key: the schema keeps every key it has
        return condense_deleted(key)
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
    if re.search(r"is not a valid input for <enum '\w+'>", reason) and key:
        # A list or a map for a key of a few named values (dtype=[fp32]): the message had not said them.
        choices = _choices(type_of(key))
        if choices:
            return f"{key}: {reason}; use one of: {', '.join(choices)}"
    if "Interpolation" in cause_type or "nterpolation" in reason:
        return f"{key}: {reason}; write a plain value or a ${{...}} that exists in the config"
    if key:
        return f"{key}: {reason}"
    return reason


def condense_deleted(key: str) -> str:
    """The one line for `~key`, a key the schema keeps (every key it has)."""
    return f"~{key}: {key} cannot be deleted; {_DELETE_HINTS.get(key) or _give_a_value(key, 'set it instead')}"


def _give_a_value(key: str, verb: str) -> str:
    """`verb` with an example: the key's default, or for a section (capture) one of its keys'."""
    inner = keys_under(key)
    example = f"{key}.{inner[0]}" if inner else key
    return f"{verb}, e.g. {example}={example_value(example)}"


def example_value(key: str) -> str:
    """The schema's default for the dotted `key`, as typed on the command line ("..." where it
    has none): the value an error message suggests."""
    return _typed(default_of(key))


def _typed(value: object) -> str:
    from enum import Enum

    if value is None or value == "???":  # "???": OmegaConf's MISSING
        return "..."
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(map(_typed, value)) + "]" if value else "[...]"
    if isinstance(value, (int, str)):
        return str(value)
    return "..."

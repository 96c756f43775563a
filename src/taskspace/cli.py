"""The ``taskspace`` command: ``taskspace <command> key=value ... [file.yaml ...]``.

Each command is a config dataclass plus a ``main(cfg) -> int`` function in its capability's
package, listed in :data:`COMMANDS`. User mistakes (:class:`TaskspaceError`) print one line
on stderr and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from taskspace.config import build_config, describe
from taskspace.errors import TaskspaceError

#: command -> (module, config class, main function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "agreement": ("taskspace.agreement.run", "AgreementConfig", "main",
                  "agreement score of human, random or table tasks"),
    "demo": ("taskspace.demo", "DemoConfig", "main",
             "the main job on digits: AS, task discovery, adversarial splits"),
    "discover": ("taskspace.discovery.runner", "DiscoverConfig", "main",
                 "task discovery: meta-train a task encoder, write the tasks it finds"),
    "pretrain": ("taskspace.discovery.ssl_pretrain", "PretrainConfig", "main",
                 "SimCLR backbone for regulated discovery (discover backbone=...)"),
    "split": ("taskspace.splits.run", "SplitConfig", "main",
              "adversarial train/test splits from discovered (or given) tasks"),
    "split-eval": ("taskspace.splits.run", "SplitEvalConfig", "main_eval",
                   "train on adversarial and random splits: the headline table"),
}


def usage() -> str:
    lines = ["usage: taskspace <command> [key=value ...] [config.yaml ...]", "", "commands:"]
    lines += [f"  {name:<12} {spec[3]}" for name, spec in COMMANDS.items()]
    lines += ["", "taskspace <command> --help lists a command's options and defaults."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, tokens = args[0], args[1:]
    if name not in COMMANDS:
        print(f"taskspace: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, cls_name, fn_name, help_line = COMMANDS[name]
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    if "-h" in tokens or "--help" in tokens:
        doc = (module.__doc__ or help_line).strip()
        print(f"usage: taskspace {name} [key=value ...] [config.yaml ...]\n\n{doc}\n\n"
              f"options (key=default):\n{describe(cls)}")
        return 0
    try:
        cfg = build_config(cls, tokens)
        return int(getattr(module, fn_name)(cfg) or 0)
    except TaskspaceError as err:
        print(f"taskspace {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"taskspace {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

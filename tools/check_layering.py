#!/usr/bin/env python3
"""Fails when a source file includes a header that runs against Foresight's layering.

The layers, lowest first (docs/architecture.md, "Layering"):

    common <- proto <- {predictor, cache_service, client} <- cluster <- worker <- bench <- cli
    {worker, cache_service} <- planner (the capacity planner) <- {bench, cli}
    common <- ucx (the UCX plumbing) <- {cache_service, client}
    common <- testing (LocalNode, LocalWorker) <- {bench, tests}

A program's entry point (any main.cc) assembles modules: it may include any module's library
headers.

A module may include its own headers and those of the modules it is allowed to depend on (LAYERS
below). A module's command-line group (X/cli/) belongs to the command line: it may include what
X may, X itself and the shared plumbing in cli/, but never another module's cli/; only cli/ may
include several modules' command groups. Tests under tests/X/ follow X's rules (plus their own
helpers under tests/); the cross-module suites (integration, cluster, fuzz) may include anything
but a command group other than the one they test through cli/.

Usage: tools/check_layering.py [ROOT]   (exit 0: clean; 1: violations, one per line)
"""
import os
import re
import sys

# module -> the modules whose headers it may include (besides its own).
LAYERS = {
    "common": set(),
    "proto": {"common"},
    "ucx": {"common"},
    "predictor": {"common", "proto"},
    "cache_service": {"common", "proto", "ucx"},
    "client": {"common", "proto", "ucx"},
    "cluster": {"common", "proto", "ucx", "client"},
    "testing": {"common"},
    "worker": {"common", "proto", "predictor", "client", "cluster"},
    "planner": {"common", "proto", "predictor", "cache_service", "worker"},
    "bench": {"common", "proto", "ucx", "predictor", "cache_service", "client", "cluster", "worker", "planner",
              "testing"},
    "cli": {"common", "proto", "ucx", "predictor", "cache_service", "client", "cluster", "worker", "planner"},
}
# Test folders that exercise several modules together.
CROSS_MODULE_TESTS = {"integration", "cluster", "fuzz"}
# What a module's tests may include beyond the module's own layer: the client's tests run the
# node's UCX server in process, as the peer they talk to.
TEST_PEERS = {"client": {"cache_service"}}
SOURCE_SUFFIXES = (".h", ".cc", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def cli_group(path):
    """'client' for client/cli/x.h; None for a header outside any module's cli/."""
    parts = path.split("/")
    return parts[0] if len(parts) > 2 and parts[1] == "cli" and parts[0] in LAYERS else None


def violation(source, header):
    """Why `source` may not include `header`, or None when it may."""
    target = header.split("/")[0]
    if target not in LAYERS and target != "tests":
        return None  # a system or generated header ("foresight.pb.h", <CLI/CLI.hpp> style)
    parts = source.split("/")
    if parts[0] == "tests":
        if len(parts) < 3:
            return None
        suite = parts[1]
        if target == "tests":
            return None
        if suite in CROSS_MODULE_TESTS:
            return None if target != "cli" or header == "cli/cli_util.h" else "tests include cli/main"
        module = suite
        group_of_source = None
        if target in TEST_PEERS.get(module, set()) or target == "testing":
            return None
    else:
        module = parts[0]
        group_of_source = cli_group(source)
        if target == "tests":
            return f"{module} includes a test header"
        if parts[-1] == "main.cc" and target != "cli" and cli_group(header) is None:
            return None  # a program's entry point assembles modules
    if module not in LAYERS:
        return None
    allowed = LAYERS[module] | {module}
    group_of_header = cli_group(header)
    if group_of_header is not None and module != "cli":
        # Command groups are the command line's; only their own group's sources and tests see them.
        if group_of_header != module:
            return f"{source} includes {group_of_header}'s command group; only cli/ assembles groups"
        if group_of_source is None and parts[0] != "tests":
            return f"{module} library code includes its own command group"
        return None
    if target == "cli":
        if group_of_source is not None and header == "cli/cli_util.h":
            return None
        if module == "cli":
            return None
        return f"{module} depends on the command line ({header})"
    if target not in allowed:
        return f"{module} may not depend on {target} (allowed: {', '.join(sorted(allowed))})"
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    root = os.path.abspath(root)
    problems = []
    checked = 0
    for top in sorted(set(LAYERS) | {"tests"}):
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                path = os.path.join(folder, name)
                source = os.path.relpath(path, root)
                checked += 1
                with open(path, encoding="utf-8", errors="replace") as f:
                    for line_no, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        why = violation(source, m.group(1))
                        if why:
                            problems.append(f"{source}:{line_no}: #include \"{m.group(1)}\": {why}")
    for p in problems:
        print(p)
    print(f"check_layering: {checked} files, {len(problems)} layering violation(s)",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

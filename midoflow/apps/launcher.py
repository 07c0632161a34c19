"""``midoflow-agent``: start osken-manager with the agent app and a config file."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from midoflow.agent.config import AgentConfig, ConfigError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="midoflow-agent",
        description="Run the midoflow agent of this host under osken-manager.")
    ap.add_argument("--config", required=True, help="agent config file (INI, section [agent])")
    ap.add_argument("--log-file", help="write the agent's log here instead of stderr")
    ap.add_argument("--verbose", action="store_true", help="debug logging")
    ap.add_argument("--with-api", action="store_true",
                    help="also serve the REST API from this process")
    args = ap.parse_args(argv)
    try:
        cfg = AgentConfig.load(args.config)
    except ConfigError as e:
        print(f"midoflow-agent: {e}", file=sys.stderr)
        return 2

    manager = shutil.which("osken-manager", path=os.path.dirname(sys.executable)) or shutil.which(
        "osken-manager")
    if manager is None:
        print("midoflow-agent: osken-manager not found: run 'make setup'", file=sys.stderr)
        return 2
    cmd = [manager]
    listen = cfg.of_listen
    if listen.startswith("/"):
        # A unix socket: OVS (maybe in another network namespace) connects to it.
        if os.path.exists(listen):
            os.unlink(listen)
        cmd += ["--ofp-listen-host", listen, "--ofp-tcp-listen-port", "6653"]
    else:
        host, _, port = listen.rpartition(":")
        cmd += ["--ofp-listen-host", host or "127.0.0.1", "--ofp-tcp-listen-port", port or "6653"]
    if args.log_file:
        cmd += ["--log-file", args.log_file]
    if args.verbose:
        cmd += ["--verbose"]
    cmd.append("midoflow.apps.agent")
    if args.with_api:
        cmd.append("midoflow.apps.api")
    env = dict(os.environ, MIDOFLOW_AGENT_CONFIG=os.path.abspath(args.config))
    os.execve(manager, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

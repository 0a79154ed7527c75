"""Writes docs/options.md from pronghorn.config.OPTIONS (the table the parser uses).

    .venv/bin/python scripts/gen_options_doc.py > docs/options.md
"""

from pronghorn.config import OPTIONS

UVICORN_DEFAULT_DIFFERS = {
    "timeout_worker_healthcheck": "uvicorn: 5 (our heartbeat comes from the event loop itself)",
}
PRONGHORN_ONLY = {
    "timeout_header_read", "limit_request_line", "limit_request_head", "limit_request_fields", "preload",
    "limit_worker_memory", "worker_lifetime", "reuse_port", "pid_file", "send_thread", "metrics", "metrics_bind",
}
# Options named as granian names them (uvicorn has none of them).
GRANIAN_NAMES = {"static_path_route", "static_path_mount", "static_path_expires"}


def status(option) -> str:
    if option.refused:
        return f"refused: {option.refused}"
    if option.name == "http":
        return "accepted; every value uses Pronghorn's C++ HTTP/1.1"
    if option.name == "ws":
        return "built; every value but none uses Pronghorn's C++ WebSockets"
    if option.name == "interface":
        return "auto, asgi3, asgi2 built; wsgi refused"
    if option.name == "h11_max_incomplete_event_size":
        return "built (sets --limit-request-head)"
    return "built"


def main() -> None:
    print("# Command-line options\n")
    print("Generated from `pronghorn/config.py` by `scripts/gen_options_doc.py`; a test checks it is current.")
    print("Every option can also be set as the environment variable shown (booleans: 1/0, true/false, yes/no, on/off;")
    print("lists: comma-separated, `--header` newline-separated). `APP` comes from `PRONGHORN_APP`, `--workers` defaults")
    print("to `$WEB_CONCURRENCY`. A refused option exits with code 2 and a one-line message naming it.\n")
    print("| option | default | environment | status | notes |")
    print("|---|---|---|---|---|")
    for o in OPTIONS:
        flag = f"`{o.flag}/--no-{o.flag[2:]}`" if o.negatable else f"`{o.flag}`"
        default = "" if o.default is None else f"`{o.default}`"
        notes = []
        if o.name in PRONGHORN_ONLY:
            notes.append("Pronghorn only")
        if o.name in GRANIAN_NAMES:
            notes.append("not in uvicorn; granian's name")
        if o.name in UVICORN_DEFAULT_DIFFERS:
            notes.append(UVICORN_DEFAULT_DIFFERS[o.name])
        notes.append(o.help.replace("|", "\\|"))
        print(f"| {flag} | {default} | `{o.env}` | {status(o)} | {'; '.join(notes)} |")


if __name__ == "__main__":
    main()

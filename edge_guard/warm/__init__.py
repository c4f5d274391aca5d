"""Warm engines: a command's model stays loaded between commands, in a local service.

The first classifying command (classify, run, policies test, the TUI's jobs; the Python
API when given `keep_alive`) starts or finds an `edge-guard serve` for its model file and
engine settings on a private Unix socket, and sends its work there; the service exits
after `keep_alive` seconds without a request. `edge-guard ps` lists them, `edge-guard stop`
ends them.

- `keepalive`: the setting (seconds or "5m"; 0 = never start one; 0 under CI/pytest);
- `registry`: a service's spec and key, its files in `<data dir>/warm/`, its record;
- `listen`: the service side (the 0600 socket, peer credentials, idle exit, `GET /warm`);
- `spawn`: starting a detached service and waiting until it is ready, stopping one;
- `route`: the command side: a classifier that sends what the service can serve there;
- `calls`: its requests (restarted when the service dies, hung up on a cancel).
"""

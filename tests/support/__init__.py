"""Test harness: private PostgreSQL and Redis instances, chatd server processes, waits.

`ports` picks free loopback ports; `wait` polls a condition against a deadline;
`procs` spawns, signals and reaps child processes by pid; `aio` runs a coroutine from
synchronous code; `naming` turns test ids into file and database names. `postgres`,
`redis` and `server` build on those to run the services a test needs, each on 127.0.0.1
only. The fixtures in `tests/conftest.py` wrap these classes; tests import the modules as
`support.<module>` (tests/ is on sys.path).
"""

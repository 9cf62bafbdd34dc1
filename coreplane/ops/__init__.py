"""coreplane.ops: the `coreplane` command-line tool (an API client, as kubectl is).

Imports only `coreplane.sdk`, `coreplane.core.codec` and `coreplane.errors` (plus third-party
click, rich and yaml): everything it shows or changes goes through the HTTP API, so operators
and programs share one path. The one exception is `coreplane replay DATA_DIR`, which is offline
(like etcdutl) and imports `coreplane.runtime.replay` lazily inside that command only
(coreplane/ops/replay.py; tests/unit/test_layers.py names the exception).
"""

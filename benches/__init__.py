"""coreplane benchmarks: `python -m benches NAME --json OUT [--smoke]`.

Each bench module has ``run(*, json_out: str | None, smoke: bool) -> dict``, seeds its inputs,
measures an anchor in the same run and reports ratios against it. The runner adds the git
revision and the machine facts, and writes the JSON.
"""

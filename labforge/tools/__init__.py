"""labforge's stand-alone tools, for an admin beside the deploy; each runs as `python -m labforge.tools.<name>`:

- doctor: checks a real inventory before a run (SSH, sudo, distro, GPU, disk, upstreams); also `./lab doctor`;
- totals: reads a `pyinfra --json` run and fails when anything changed or failed (`--no-change`);
- cvat_check: proves a lab through CVAT's own API (login, functions listed, a detection, a click, a track).

They need neither tests/ nor testlab/ nor the test lab's tools.
"""

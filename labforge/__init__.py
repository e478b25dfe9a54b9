"""The library the layers in tasks/ use (facts, platform, apt sources, compose, downloads, report, ...) and the
control-machine tools (hosts file, doctor, run totals). Nothing here imports tasks/."""

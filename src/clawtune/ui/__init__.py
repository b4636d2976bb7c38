"""`clawtune ui`: one page to watch and steer the loop (runs, data, evaluations, traffic, experiments, failures).

It sits above every stage because it reads all of their outputs, each through the module that owns the format; the
gateway's app gets it mounted at /ui by `clawtune serve`. The page's files are in `static/` (uPlot 1.6.32, MIT, is
vendored there as `uPlot.iife.min.js` with its licence: a small, well-kept canvas chart library).
"""

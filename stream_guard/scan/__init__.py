"""``stream-guard scan``: score every video and image under some paths, write a report.

* :mod:`stream_guard.scan.collect`: which files a scan covers;
* :mod:`stream_guard.scan.runner`: analyse them one by one (a failing file is recorded, not fatal);
* :mod:`stream_guard.scan.report`: ``report.json`` and ``report.html`` with plots and thumbnails;
* :mod:`stream_guard.scan.json_lines`: ``--jsonl``, a JSON line per file as soon as it is done;
* :mod:`stream_guard.scan.command`: the command line glue (progress bar, printing, exit code).

Nothing is imported here, so that importing the package stays cheap.
"""

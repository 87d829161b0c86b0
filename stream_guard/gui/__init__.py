"""``stream-guard gui``: a Tk desktop app around the live pipeline.

* :mod:`stream_guard.gui.sources`: the source choices offered (webcams, screen, demo);
* :mod:`stream_guard.gui.bridge`: the sink handing the newest result to the Tk thread, and the
  background thread that runs a :class:`~stream_guard.pipeline.Pipeline`;
* :mod:`stream_guard.gui.panel`: the per-face side panel;
* :mod:`stream_guard.gui.app`: the window, its controls and ``run_gui``.

Nothing is imported here, so that importing the package does not need Tk.
"""

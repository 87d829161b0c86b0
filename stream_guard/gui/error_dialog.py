"""An error shown in a window of its own over the app's.

Tk's message box is modal: it runs an event loop of its own until OK is pressed, so the app's
polling stopped under it (a Ctrl-C or SIGTERM then waited for someone to press OK), and closing the
app while it was open destroyed the window under that loop (a Tcl traceback). This one is an
ordinary window: the app goes on polling, and closing the app closes it too.
"""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk

TITLE = "stream_guard: error"


class ErrorDialog:
    """``message`` in a small window over ``parent``, with an OK button (Return and Escape too)."""

    def __init__(self, parent: tk.Misc, message: str) -> None:
        self.window = tk.Toplevel(parent)
        self.window.title(TITLE)
        self.window.transient(parent)  # kept above the app's window, and closed with it
        self.window.resizable(False, False)
        frame = ttk.Frame(self.window, padding=12)
        frame.pack(fill="both", expand=True)
        tk.Label(frame, bitmap="error").grid(row=0, column=0, sticky="n", padx=(0, 10))
        ttk.Label(frame, text=message, wraplength=420, justify="left").grid(row=0, column=1, sticky="w")
        ok = ttk.Button(frame, text="OK", command=self.close)
        ok.grid(row=1, column=1, sticky="e", pady=(12, 0))
        for key in ("<Return>", "<Escape>"):
            self.window.bind(key, lambda _event: self.close())
        self.window.protocol("WM_DELETE_WINDOW", self.close)
        ok.focus_set()

    @property
    def is_open(self) -> bool:
        try:
            return bool(self.window.winfo_exists())
        except tk.TclError:  # the app's window is gone
            return False

    def close(self) -> None:
        try:
            self.window.destroy()
        except tk.TclError:  # already gone with the app's window
            pass

"""``stream-guard bench``: the real pipeline on generated clips, timed per stage, plus the
seed project's ResNeXt-50 + LSTM as a cost baseline (see README, "Performance")."""

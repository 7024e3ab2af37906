"""The run: the one training loop, its guards (the saved config, the workdir lock, signals, blow-ups), drawing and
picturing samples, evaluation reports."""
